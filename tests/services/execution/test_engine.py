"""The execution engine in one process, on SQLite and PostgreSQL, with scripted purgers."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.repository import list_events
from app.services.execution import Worker
from app.state import AppState
from app.wiring import new_engine
from tests.engine_support import Script, intervals, new_script, run_until_settled

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return new_script(tmp_path, default=["ok"])


@pytest.fixture
def settings_overrides(script: Script, request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("settings")
    return {
        "testing_purgers": script.path,
        "retry_base_seconds": 0.2,
        "max_attempts": 4,
        "lease_seconds": 5,
        "worker_poll_seconds": 0.05,
        **(marker.kwargs if marker else {}),
    }


async def file(client: httpx.AsyncClient, auth: Auth, site: str | None = None) -> str:
    body = {"kind": "account", "subject": {"site_name": site or f"band-{uuid.uuid4().hex[:8]}"}}
    response = await client.post(URL, json=body, headers=auth())
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def get(client: httpx.AsyncClient, auth: Auth, request_id: str) -> dict[str, Any]:
    response = await client.get(f"{URL}/{request_id}", headers=auth())
    data: dict[str, Any] = response.json()
    return data


def task(data: dict[str, Any], purger: str) -> dict[str, Any]:
    return next(t for t in data["tasks"] if t["purger"] == purger)


async def event_types(state: AppState, request_id: str) -> list[tuple[str, str | None]]:
    async with state.sessionmaker() as session:
        return [(e.type, e.purger) for e in await list_events(session, uuid.UUID(request_id))]


async def test_request_completes_when_every_purger_verifies_clean(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    request_id = await file(client, auth)
    assert await run_until_settled(state, [request_id]) == {request_id: "completed"}
    data = await get(client, auth, request_id)
    assert data["status"] == "completed" and data["completed_at"] is not None
    for t in data["tasks"]:
        assert t["status"] == "succeeded" and t["attempts"] == 1 and t["error"] is None
        assert t["deleted"] == {f"{t['purger']}_items": 1}
        assert t["started_at"] and t["finished_at"] and t["started_at"] <= t["finished_at"]
    assert task(data, "postgres")["retained"] == {
        "invoices": {"count": 1, "reason": "scripted retention"}
    }
    events = await event_types(state, request_id)
    assert events[:2] == [("created", None), ("claimed", None)]
    assert ("completed", None) in events
    for purger in ("meta_graph", "postgres", "mongodb", "s3"):
        assert ("task_started", purger) in events and ("task_succeeded", purger) in events
    assert len(script.starts(request_id)) == 4


async def test_transient_failures_retry_with_growing_delays_then_succeed(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    script.write(
        subjects={"flaky-band": ["transient", "transient", "transient", "ok"]}, default=["ok"]
    )
    request_id = await file(client, auth, "flaky-band")
    assert await run_until_settled(state, [request_id]) == {request_id: "completed"}
    data = await get(client, auth, request_id)
    assert {t["attempts"] for t in data["tasks"]} == {4}
    async with state.sessionmaker() as session:
        events = await list_events(session, uuid.UUID(request_id))
    retries = [e for e in events if e.type == "task_retrying" and e.purger == "mongodb"]
    assert len(retries) == 3
    delays = [
        (datetime.fromisoformat(e.detail["next_attempt_at"]) - e.at).total_seconds()
        for e in retries
    ]
    assert delays[0] <= delays[1] <= delays[2] and delays[2] > delays[0]
    starts = [c["t"] for c in script.starts(request_id, "mongodb")]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= delay * 0.9 for gap, delay in zip(gaps, delays, strict=True)), (gaps, delays)


async def test_permanent_failure_fails_then_operator_retry_completes(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    script.write(purgers={"s3": {"default": ["permanent"]}})
    request_id = await file(client, auth)
    assert await run_until_settled(state, [request_id]) == {request_id: "failed"}
    data = await get(client, auth, request_id)
    assert task(data, "s3")["status"] == "failed"
    assert task(data, "s3")["error"] == "scripted permanent failure"
    assert data["status_reason"] == "failed in: s3"
    # One failing store did not stop the others.
    assert {t["purger"] for t in data["tasks"] if t["status"] == "succeeded"} == {
        "meta_graph",
        "postgres",
        "mongodb",
    }

    assert (
        await client.post(f"{URL}/{request_id}/retry", headers=auth("deletions:write"))
    ).status_code == 403
    script.write(default=["ok"])
    retried = await client.post(f"{URL}/{request_id}/retry", headers=auth("deletions:admin"))
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    assert await run_until_settled(state, [request_id]) == {request_id: "completed"}
    # Only the failed task ran again.
    assert len(script.starts(request_id, "s3")) == 2
    assert len(script.starts(request_id, "postgres")) == 1
    assert ("retried", None) in await event_types(state, request_id)


async def test_retry_is_only_for_failed_requests(client: httpx.AsyncClient, auth: Auth) -> None:
    request_id = await file(client, auth)
    response = await client.post(f"{URL}/{request_id}/retry", headers=auth())
    assert response.status_code == 409
    assert (await client.post(f"{URL}/{uuid.uuid4()}/retry", headers=auth())).status_code == 404


async def test_transient_failures_give_up_after_max_attempts(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    script.write(purgers={"mongodb": {"default": ["transient"]}})
    request_id = await file(client, auth)
    assert await run_until_settled(state, [request_id]) == {request_id: "failed"}
    mongo = task(await get(client, auth, request_id), "mongodb")
    assert mongo["attempts"] == 4
    assert mongo["error"] == "gave up after 4 attempts: scripted transient failure"


async def test_data_left_after_purge_is_never_completed(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    script.write(purgers={"s3": {"default": ["leftover"]}})
    request_id = await file(client, auth)
    assert await run_until_settled(state, [request_id]) == {request_id: "failed"}
    data = await get(client, auth, request_id)
    s3 = task(data, "s3")
    assert s3["status"] == "failed"
    assert "verification found data left: 1 in s3_items" in s3["error"]
    assert data["completed_at"] is None


async def test_not_applicable_is_skipped_with_its_reason(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    script.write(purgers={"meta_graph": {"default": ["skip"]}})
    request_id = await file(client, auth)
    assert await run_until_settled(state, [request_id]) == {request_id: "completed"}
    meta = task(await get(client, auth, request_id), "meta_graph")
    assert (meta["status"], meta["error"]) == ("skipped", "scripted: nothing to do")


async def test_meta_step_finishes_before_postgres_starts_and_others_run_alongside(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    script.write(
        purgers={"meta_graph": {"default": ["sleep:0.5"]}, "s3": {"default": ["sleep:0.2"]}}
    )
    request_ids = [await file(client, auth) for _ in range(5)]
    statuses = await run_until_settled(state, request_ids)
    assert set(statuses.values()) == {"completed"}
    spans = {(r, p): (start, end) for r, p, start, end in intervals(script.calls())}
    for rid in request_ids:
        _, meta_end = spans[(rid, "meta_graph")]
        assert spans[(rid, "postgres")][0] >= meta_end
        # The stores without the constraint did not wait for the Meta step.
        assert spans[(rid, "mongodb")][0] < meta_end
        assert spans[(rid, "s3")][0] < meta_end


async def test_failed_meta_step_keeps_the_tokens(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    script.write(purgers={"meta_graph": {"default": ["permanent"]}})
    request_id = await file(client, auth)
    assert await run_until_settled(state, [request_id]) == {request_id: "failed"}
    data = await get(client, auth, request_id)
    assert task(data, "postgres")["status"] == "pending"
    assert script.starts(request_id, "postgres") == []


@pytest.mark.settings(purger_timeout_seconds=0.5)
async def test_a_hanging_purger_times_out_and_is_retried(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    script.write(purgers={"mongodb": {"default": ["hang", "ok"]}})
    request_id = await file(client, auth)
    assert await run_until_settled(state, [request_id]) == {request_id: "completed"}
    mongo = task(await get(client, auth, request_id), "mongodb")
    assert mongo["attempts"] == 2
    async with state.sessionmaker() as session:
        events = await list_events(session, uuid.UUID(request_id))
    assert any(e.type == "task_retrying" and e.detail.get("error") == "timed out" for e in events)


@pytest.mark.settings(shutdown_grace_seconds=0.2)
async def test_shutdown_hands_a_running_request_back(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    script.write(purgers={"mongodb": {"default": ["hang", "ok"]}})
    request_id = await file(client, auth)
    first = Worker(new_engine(state, "worker-one"))
    runner = asyncio.create_task(first.run())
    for _ in range(100):
        if script.starts(request_id, "mongodb"):
            break
        await asyncio.sleep(0.05)
    first.stop()
    await runner
    events = await event_types(state, request_id)
    assert events[-1] == ("released", None)
    # The next worker claims it at once (no lease to wait for) and completes it.
    assert await run_until_settled(state, [request_id], timeout=10) == {request_id: "completed"}
    assert task(await get(client, auth, request_id), "mongodb")["attempts"] == 2


async def test_a_cancelled_request_runs_no_purger_and_is_only_minimised(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    request_id = await file(client, auth)
    await client.post(f"{URL}/{request_id}/cancel", headers=auth())
    engine = new_engine(state)
    claim = await engine.claim()
    assert claim is not None
    await engine.run_claimed(claim.request_id)
    assert await engine.claim() is None
    assert script.calls() == []
    data = await get(client, auth, request_id)
    assert data["status"] == "cancelled"
    assert {t["status"] for t in data["tasks"]} == {"pending"}
    assert (await event_types(state, request_id))[-1] == ("minimised", None)


async def test_a_retrying_task_shows_when_its_next_attempt_is_due(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    """API and CLI show `next_attempt_at` on a task that waits for its next try, and only
    then (a finished task's old schedule is not news)."""
    from sqlalchemy import update

    from app.models import DeletionTask

    script.write(default=["ok"])
    request_id = await file(client, auth)
    assert await run_until_settled(state, [request_id]) == {request_id: "completed"}
    due = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    async with state.sessionmaker() as session:
        await session.execute(
            update(DeletionTask)
            .where(DeletionTask.request_id == uuid.UUID(request_id))
            .values(next_attempt_at=due)
        )
        await session.execute(
            update(DeletionTask)
            .where(DeletionTask.request_id == uuid.UUID(request_id))
            .where(DeletionTask.purger == "s3")
            .values(status="retrying")
        )
        await session.commit()
    data = await get(client, auth, request_id)
    assert datetime.fromisoformat(task(data, "s3")["next_attempt_at"]) == due
    assert task(data, "postgres")["next_attempt_at"] is None  # succeeded: nothing due


# The long request hangs: a short grace lets the worker stop (and release it) at the end
# instead of waiting out the default 20 s.
@pytest.mark.settings(worker_concurrency=1, shutdown_grace_seconds=0.5)
async def test_a_disconnect_runs_beside_long_requests_that_fill_every_slot(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    """Short work never waits for long work (#18): with its one slot taken by an account
    deletion that runs on, the worker still claims and completes a disconnect."""
    script.write(purgers={"mongodb": {"default": ["ok"], "subjects": {"band-long": ["hang"]}}})
    long_id = await file(client, auth, "band-long")
    worker = Worker(new_engine(state))
    runner = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if script.starts(long_id, "mongodb"):
                break
            await asyncio.sleep(0.05)
        assert script.starts(long_id, "mongodb")
        body = {
            "kind": "instagram_disconnect",
            "subject": {"tenant_id": str(uuid.uuid4()), "instagram_account_id": str(uuid.uuid4())},
        }
        response = await client.post(URL, json=body, headers=auth())
        assert response.status_code == 202, response.text
        disconnect_id = str(response.json()["id"])
        for _ in range(400):
            if (await get(client, auth, disconnect_id))["status"] == "completed":
                break
            await asyncio.sleep(0.05)
        assert (await get(client, auth, disconnect_id))["status"] == "completed"
        assert (await get(client, auth, long_id))["status"] == "running"
    finally:
        worker.stop()
        await runner
