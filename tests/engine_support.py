"""Helpers for engine tests: scripts for the scripted purgers, their call log, driving workers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.models import RequestStatus
from app.services.execution import Worker
from app.state import AppState
from app.wiring import new_engine

TERMINAL = {RequestStatus.completed, RequestStatus.failed, RequestStatus.cancelled}


@dataclass
class Script:
    path: Path
    log: Path

    def write(self, **script: Any) -> None:
        self.path.write_text(json.dumps({"log": str(self.log), **script}))

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def starts(
        self, request_id: str | None = None, purger: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            c
            for c in self.calls()
            if c["phase"] == "start"
            and (request_id is None or c["request"] == request_id)
            and (purger is None or c["purger"] == purger)
        ]


def new_script(tmp_path: Path, **script: Any) -> Script:
    s = Script(tmp_path / "script.json", tmp_path / "calls.jsonl")
    s.write(**script)
    return s


async def run_until_settled(
    state: AppState, request_ids: list[str], *, timeout: float = 30.0
) -> dict[str, str]:
    """Run one in-process worker until every request is completed, failed or cancelled."""
    engine = new_engine(state)
    worker = Worker(engine)
    runner = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + timeout
        while True:
            statuses = {
                rid: (await state.requests.get(uuid.UUID(rid))).status for rid in request_ids
            }
            if all(s in TERMINAL for s in statuses.values()):
                return statuses
            if time.monotonic() > deadline:
                raise AssertionError(f"not settled in {timeout}s: {statuses}")
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await runner


def intervals(calls: list[dict[str, Any]]) -> Iterator[tuple[str, str, float, float]]:
    """(request, purger, start, end) of every purge call that ended."""
    open_calls: dict[tuple[str, str, int], float] = {}
    for call in calls:
        key = (call["request"], call["purger"], call["pid"])
        if call["phase"] == "start":
            open_calls[key] = call["t"]
        elif call["phase"] == "end" and key in open_calls:
            yield call["request"], call["purger"], open_calls.pop(key), call["t"]
