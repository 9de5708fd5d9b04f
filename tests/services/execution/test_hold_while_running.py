"""A legal hold placed while a request is running: the task in flight finishes, no further
task starts, the request settles on hold (never reported done), and it completes once the
hold is released. On both tracking stores; the purgers are in-process doubles whose Meta
step waits for the test, so the hold lands exactly while that step runs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.purgers.base import PurgeResult, PurgerName, PurgerSlot, Subject
from app.repository import list_events
from app.state import AppState
from app.wiring import new_worker
from testsupport.cli import SettingsForTests
from testsupport.scripted import StaticResolver

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"


class Gate:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.go = asyncio.Event()


class GatedPurger:
    """Deletes nothing; logs each purge; the gated one waits for the test to open it."""

    def __init__(self, name: PurgerName, calls: list[tuple[str, str]], gate: Gate | None) -> None:
        self._name = name
        self._calls = calls
        self._gate = gate

    @property
    def name(self) -> PurgerName:
        return self._name

    async def preview(self, subject: Subject) -> PurgeResult:
        return PurgeResult()

    async def purge(self, subject: Subject) -> PurgeResult:
        self._calls.append((str(subject.request_id), self._name.value))
        if self._gate is not None and not self._gate.go.is_set():
            self._gate.started.set()
            await self._gate.go.wait()
        return PurgeResult(deleted={f"{self._name.value}_items": 1})

    async def verify(self, subject: Subject) -> dict[str, int]:
        return {f"{self._name.value}_items": 0}


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def calls() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"worker_poll_seconds": 0.05, "lease_seconds": 30}


@pytest.fixture
async def app(
    settings: SettingsForTests, gate: Gate, calls: list[tuple[str, str]]
) -> AsyncIterator[FastAPI]:
    purgers: dict[PurgerName, PurgerSlot] = {
        name: GatedPurger(name, calls, gate if name is PurgerName.meta_graph else None)
        for name in PurgerName
    }
    application = create_app(settings, purgers=purgers, resolver=StaticResolver())
    async with application.router.lifespan_context(application):
        yield application


async def wait_for_status(
    client: httpx.AsyncClient, auth: Auth, request_id: str, wanted: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data: dict[str, Any] = (await client.get(f"{URL}/{request_id}", headers=auth())).json()
        if data["status"] == wanted:
            return data
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.05)


async def test_a_hold_placed_while_running_stops_the_request_before_its_next_task(
    client: httpx.AsyncClient,
    auth: Auth,
    state: AppState,
    gate: Gate,
    calls: list[tuple[str, str]],
) -> None:
    worker = new_worker(state)  # the app's worker: a release wakes it
    loop = asyncio.create_task(worker.run())
    try:
        created = await client.post(
            URL, json={"kind": "account", "subject": {"site_name": "running-band"}}, headers=auth()
        )
        request_id = created.json()["id"]
        worker.wake()
        await asyncio.wait_for(gate.started.wait(), timeout=30)  # the Meta step is running

        placed = await client.post(
            "/v1/holds",
            json={"subject": {"site_name": "running-band"}, "reason": "preserve for court"},
            headers=auth("deletions:admin"),
        )
        assert placed.status_code == 201
        assert placed.json()["held_requests"] == 0  # its worker holds it: it stops itself
        gate.go.set()

        held = await wait_for_status(client, auth, request_id, "on_hold")
        tasks = {t["purger"]: t["status"] for t in held["tasks"]}
        assert tasks["meta_graph"] == "succeeded"  # the attempt in flight finished
        assert tasks["postgres"] == "pending"  # the next task never started
        assert (request_id, "postgres") not in calls
        assert held["completed_at"] is None
        async with state.sessionmaker() as session:
            kinds = [e.type for e in await list_events(session, uuid.UUID(request_id))]
        assert kinds[-1] == "held" and "completed" not in kinds
        receipt = await client.get(f"{URL}/{request_id}/receipt", headers=auth())
        assert receipt.status_code == 409

        released = await client.delete(
            f"/v1/holds/{placed.json()['id']}", headers=auth("deletions:admin")
        )
        assert released.status_code == 204
        done = await wait_for_status(client, auth, request_id, "completed")
        assert {t["status"] for t in done["tasks"]} == {"succeeded"}
        assert calls.count((request_id, "postgres")) == 1
        assert calls.count((request_id, "meta_graph")) == 1
    finally:
        gate.go.set()
        worker.stop()
        await loop
