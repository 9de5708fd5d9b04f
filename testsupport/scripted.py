"""Test doubles of the service: scripted purgers and a resolver that finds nothing.

Tests inject them through ``create_app(settings, **doubles(settings))`` (``doubles`` in
:mod:`testsupport.cli`), and processes started by tests through
``python -m testsupport.cli`` with ``DELETION_TESTING_PURGERS=/path/script.json``. Every
purger name is then served by a :class:`ScriptedPurger` that follows the script and
appends what it did to a JSON-lines log, so tests can check concurrency, ordering and
takeovers across worker processes. The script::

    {"log": "/tmp/run/calls.jsonl",
     "default": ["ok"],
     "purgers": {"mongodb": {"default": ["ok"], "subjects": {"band-7": ["transient", "ok"]}}}}

A list gives one behaviour per attempt (the last one repeats). Behaviours:
``ok``; ``transient`` (PurgeRetriable); ``permanent`` (PurgeFailed); ``skip``
(PurgeNotApplicable); ``hang`` (sleeps an hour); ``leftover`` (purge returns, verify
still finds one item); ``sleep:SECONDS`` (then ok). The subject key is the value
of the request's first identity.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from app.datamap import Resolution, Selection
from app.models import RequestKind
from app.purgers.base import (
    PurgeFailed,
    PurgeNotApplicable,
    PurgeResult,
    PurgeRetriable,
    PurgerName,
    Retained,
    Subject,
)


class ScriptedPurger:
    def __init__(self, name: PurgerName, script_path: Path) -> None:
        self.name = name
        self.purger_name = name
        self._script_path = script_path
        self._parsed: tuple[bytes, dict[str, Any]] | None = None

    def _script(self) -> dict[str, Any]:
        """The script as the file says now (tests rewrite it), parsed again only when its
        bytes changed."""
        raw = self._script_path.read_bytes()
        if self._parsed is None or self._parsed[0] != raw:
            self._parsed = (raw, json.loads(raw))
        return self._parsed[1]

    def _log(self, script: dict[str, Any], **entry: Any) -> None:
        if not script.get("log"):
            return  # a benchmark's no-op purgers: nothing recorded
        line = json.dumps({**entry, "t": time.time(), "pid": os.getpid()}) + "\n"
        # One short O_APPEND write per line: lines of several processes never interleave.
        fd = os.open(script["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def _attempt(self, script: dict[str, Any], request_id: str) -> int:
        if not script.get("log"):
            return 1
        path = Path(script["log"])
        if not path.exists():
            return 1
        started = 0
        for line in path.read_text().splitlines():
            if request_id not in line or '"start"' not in line:
                continue
            entry = json.loads(line)
            if (
                entry["request"] == request_id
                and entry["purger"] == self.purger_name
                and entry["phase"] == "start"
            ):
                started += 1
        return started + 1

    def _behaviour(self, script: dict[str, Any], subject: Subject, attempt: int) -> str:
        config = script.get("purgers", {}).get(self.purger_name, {})
        key = next(iter(subject.identities.values())).reveal() if subject.identities else ""
        plan: list[str] = (
            config.get("subjects", {}).get(key)
            or script.get("subjects", {}).get(key)
            or config.get("default")
            or script.get("default")
            or ["ok"]
        )
        return plan[min(attempt, len(plan)) - 1]

    async def preview(self, subject: Subject) -> PurgeResult:
        return PurgeResult(deleted={f"{self.purger_name}_items": 1})

    async def purge(self, subject: Subject) -> PurgeResult:
        script = self._script()
        request = str(subject.request_id)
        attempt = self._attempt(script, request)
        behaviour = self._behaviour(script, subject, attempt)
        self._log(
            script,
            request=request,
            purger=self.purger_name,
            phase="start",
            attempt=attempt,
            behaviour=behaviour,
        )
        outcome = "ok"
        try:
            if behaviour == "transient":
                outcome = "transient"
                raise PurgeRetriable("scripted transient failure")
            if behaviour == "permanent":
                outcome = "permanent"
                raise PurgeFailed("scripted permanent failure")
            if behaviour == "skip":
                outcome = "skip"
                raise PurgeNotApplicable("scripted: nothing to do")
            if behaviour == "hang":
                outcome = "hang"
                await asyncio.sleep(3600)
            if behaviour.startswith("sleep:"):
                await asyncio.sleep(float(behaviour.split(":", 1)[1]))
            return PurgeResult(
                deleted={f"{self.purger_name}_items": 1},
                retained={"invoices": _retained()} if self.purger_name == "postgres" else {},
            )
        finally:
            self._log(
                script, request=request, purger=self.purger_name, phase="end", outcome=outcome
            )

    async def verify(self, subject: Subject) -> dict[str, int]:
        script = self._script()
        request = str(subject.request_id)
        attempt = self._attempt(script, request) - 1
        behaviour = self._behaviour(script, subject, max(attempt, 1))
        left = 1 if behaviour == "leftover" else 0
        self._log(script, request=request, purger=self.purger_name, phase="verify", left=left)
        return {f"{self.purger_name}_items": left}


def _retained() -> Retained:
    return Retained(count=1, reason="scripted retention")


class StaticResolver:
    """Resolves every subject to nothing: scripted purgers do not look at stores."""

    async def resolve(
        self, kind: RequestKind, identities: dict[str, str], pinned: Selection | None = None
    ) -> Resolution:
        return Resolution()


def scripted_purgers(script_path: Path) -> dict[PurgerName, ScriptedPurger]:
    return {name: ScriptedPurger(name, script_path) for name in PurgerName}
