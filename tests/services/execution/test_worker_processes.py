"""Real worker processes sharing the queue in PostgreSQL: draining, crashes, takeovers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.db import create_engine, create_sessionmaker
from app.models import DeletionRequest, DeletionTask, RequestKind
from app.repository import list_events
from app.routers.requests import new_deletion
from app.schemas import CreateAccountDeletion
from app.services.intake.rest import RequestService
from app.subjects import AccountSubject
from tests.app_fixtures import HASH_KEY, JWT_SECRET, RECEIPT_KEY, make_settings
from tests.engine_support import Script, new_script
from testsupport.cli import command, environment

pytestmark = pytest.mark.slow


@dataclass
class Cluster:
    url: str
    script: Script
    tmp: Path
    service: RequestService
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DELETION_")}
        env.update(
            DELETION_ENVIRONMENT="test",
            DELETION_DATABASE_URL=self.url,
            DELETION_TESTING_PURGERS=str(self.script.path),
            DELETION_JWT_SECRET=JWT_SECRET,
            DELETION_HASH_KEY=HASH_KEY,
            DELETION_RECEIPT_SIGNING_KEY=RECEIPT_KEY,
            DELETION_WORKER_POLL_SECONDS="0.05",
            DELETION_RETRY_BASE_SECONDS="0.2",
            DELETION_SHUTDOWN_GRACE_SECONDS="1",
        )
        env.update(extra)
        return env

    def start_worker(self, **extra: str) -> subprocess.Popen[bytes]:
        with (self.tmp / f"worker-{len(self.processes)}.log").open("wb") as log:
            process = subprocess.Popen(
                command("worker"), env=environment(self.env(**extra)), stdout=log, stderr=log
            )
        self.processes.append(process)
        return process

    async def file(self, count: int, prefix: str = "band") -> list[str]:
        ids = []
        for i in range(count):
            body = CreateAccountDeletion(
                kind=RequestKind.account, subject=AccountSubject(site_name=f"{prefix}-{i}")
            )
            intake = await self.service.create(new_deletion(body, requested_by="test"))
            ids.append(str(intake.request.id))
        return ids

    async def statuses(self) -> Counter[str]:
        engine = create_engine(self.url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    sa.select(DeletionRequest.status, sa.func.count()).group_by(
                        DeletionRequest.status
                    )
                )
                return Counter({status: count for status, count in rows.all()})
        finally:
            await engine.dispose()

    async def wait_for(self, status: str, count: int, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if (await self.statuses())[status] >= count:
                return time.monotonic() - started
            dead = [p.args for p in self.processes if p.poll() not in (None, -9)]
            assert not dead, f"a worker exited: {self.logs()}"
            await _sleep(0.1)
        raise AssertionError(f"timed out: {await self.statuses()}\n{self.logs()}")

    async def task_status(self, request_id: str, purger: str) -> str | None:
        engine = create_engine(self.url)
        try:
            async with engine.connect() as conn:
                return (
                    await conn.execute(
                        sa.select(DeletionTask.status).where(
                            DeletionTask.request_id == uuid.UUID(request_id),
                            DeletionTask.purger == purger,
                        )
                    )
                ).scalar()
        finally:
            await engine.dispose()

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.tmp.glob("worker-*.log")))


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


@pytest.fixture
def cluster_db(pg_server: Any, tracking_template: str) -> Iterator[str]:
    name = f"queue_{uuid.uuid4().hex[:10]}"
    pg_server.create_database(name, template=tracking_template)
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
async def cluster(cluster_db: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    script = new_script(tmp_path, default=["ok"])
    settings = make_settings(cluster_db)
    engine = create_engine(cluster_db)
    service = RequestService(settings, create_sessionmaker(engine), settings.effective_hash_key)
    cluster = Cluster(cluster_db, script, tmp_path, service)
    try:
        yield cluster
    finally:
        for process in cluster.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        await engine.dispose()


async def test_three_workers_drain_300_requests_exactly_once(cluster: Cluster) -> None:
    request_ids = await cluster.file(300)
    for _ in range(3):
        cluster.start_worker()
    seconds = await cluster.wait_for("completed", 300, timeout=180)
    print(f"\n3 workers drained 300 requests in {seconds:.1f}s ({300 / seconds:.0f}/s)")
    starts = Counter((c["request"], c["purger"]) for c in cluster.script.starts())
    assert set(starts) == {
        (r, p) for r in request_ids for p in ("meta_graph", "postgres", "mongodb", "s3")
    }
    assert set(starts.values()) == {1}, "a task ran more than once"
    workers = {c["pid"] for c in cluster.script.starts()}
    assert len(workers) >= 2, "the work was not shared"
    for process in cluster.processes:
        process.send_signal(signal.SIGTERM)
    assert [p.wait(timeout=20) for p in cluster.processes] == [0, 0, 0]
    assert await cluster.statuses() == Counter({"completed": 300})


async def test_a_killed_workers_request_is_taken_over_and_finished(cluster: Cluster) -> None:
    cluster.script.write(purgers={"mongodb": {"default": ["hang", "ok"]}})
    (request_id,) = await cluster.file(1, prefix="crash")
    first = cluster.start_worker(DELETION_LEASE_SECONDS="2")
    deadline = time.monotonic() + 30
    # Kill it once it hangs in MongoDB and has recorded the Meta step as done.
    while not (
        cluster.script.starts(request_id, "mongodb")
        and await cluster.task_status(request_id, "meta_graph") == "succeeded"
    ):
        assert time.monotonic() < deadline, cluster.logs()
        await _sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    killed_at = time.monotonic()
    second = cluster.start_worker(DELETION_LEASE_SECONDS="2")
    await cluster.wait_for("completed", 1, timeout=60)
    assert time.monotonic() - killed_at >= 1.0, "taken over before the lease expired"

    mongo_starts = cluster.script.starts(request_id, "mongodb")
    assert [c["pid"] for c in mongo_starts] == [first.pid, second.pid]
    # What the dead worker finished is not done again.
    assert len(cluster.script.starts(request_id, "meta_graph")) == 1
    engine = create_engine(cluster.url)
    try:
        async with create_sessionmaker(engine)() as session:
            events = await list_events(session, uuid.UUID(request_id))
    finally:
        await engine.dispose()
    takeovers = [e for e in events if e.type == "lease_taken_over"]
    assert len(takeovers) == 1
    claims = [e.actor for e in events if e.type == "claimed"]
    assert takeovers[0].detail["previous_owner"] == claims[0]
    assert takeovers[0].actor == claims[1] != claims[0]
    assert str(first.pid) in str(claims[0]) and str(second.pid) in str(claims[1])
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=20) == 0
