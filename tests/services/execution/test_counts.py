"""Counts add up across attempts: a purge cut off part-way and resumed claims all it deleted.

Real PostgreSQL, FerretDB and moto, seeded with a three-tenant world; the engine runs in
this process. Each test cuts a purge off after some committed batches in a different way
(a store outage, a timeout behind a lock, a refusal then an operator's retry, a lost
lease) and checks the task's ``deleted`` counts, GET and the receipt against what the
preview counted for the subject before anything was deleted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from aiobotocore.session import get_session
from pymongo import AsyncMongoClient, monitoring

from app.db import create_engine
from app.models import DeletionRequest, TaskStatus
from app.purgers.base import NotConfigured, PurgerName, PurgerSlot
from app.purgers.mongodb import MongoPurger
from app.repository import get_tasks, list_events, update_task
from app.services.execution import Engine, LeaseLost, TaskCounts, Worker, new_worker_id
from app.settings import Settings
from app.state import AppState
from app.wiring import new_engine
from tests.app_fixtures import HASH_KEY, JWT_SECRET, RECEIPT_KEY
from tests.purgers.test_mongodb import StopServerAfterDeletes
from testsupport.harness.services import FerretDBServer
from testsupport.seed import (
    CACHE,
    MEDIA,
    World,
    create_buckets,
    make_world,
    seed_mongo,
    seed_postgres,
    seed_s3,
)

pytestmark = pytest.mark.slow

URL = "/v1/deletion-requests"
WORKER_BIN = Path(sys.executable).parent / "soundops-deletion"
MESSAGES = "instagram_messages"
Auth = Callable[..., dict[str, str]]
Data = dict[str, Any]


@dataclass
class Seeded:
    world: World
    pg_dsn: str
    mongo: Any  # the seeded MongoDB database
    s3: Any  # an entered aiobotocore S3 client


@pytest.fixture
async def seeded(
    fresh_pg_database: Any,
    soundops_template_database: str,
    mongodb_url: str,
    s3_endpoint_url: str,
    moto_server: Any,
) -> AsyncIterator[Seeded]:
    world = make_world()
    database = fresh_pg_database(template=soundops_template_database, prefix="counts")
    await seed_postgres(database.url, world)
    mongo_name = f"counts_{uuid.uuid4().hex[:8]}"
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    await seed_mongo(mongo[mongo_name], world)
    moto_server.reset()
    try:
        async with get_session().create_client(
            "s3", endpoint_url=s3_endpoint_url, region_name="us-east-1"
        ) as s3:
            await create_buckets(s3)
            await seed_s3(s3, world)
            yield Seeded(world, database.url, mongo[mongo_name], s3)
    finally:
        await mongo.close()
        # A fresh client: a test may have restarted the server under the first one.
        cleanup: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
        await cleanup.drop_database(mongo_name)
        await cleanup.close()


@pytest.fixture
def settings_overrides(
    seeded: Seeded, mongodb_url: str, s3_endpoint_url: str, request: pytest.FixtureRequest
) -> dict[str, Any]:
    marker = request.node.get_closest_marker("settings")
    return {
        "target_postgres_url": seeded.pg_dsn,
        "mongodb_url": mongodb_url,
        "mongodb_database": seeded.mongo.name,
        "s3_endpoint_url": s3_endpoint_url,
        "mongodb_batch_size": 100,
        "retry_base_seconds": 0.05,
        "worker_poll_seconds": 0.05,
        **(marker.kwargs if marker else {}),
    }


# --- helpers ---------------------------------------------------------------------------


def task(data: Data, purger: str) -> Data:
    return next(t for t in data["tasks"] if t["purger"] == purger)


async def more_messages(seeded: Seeded, count: int) -> None:
    """``count`` more messages of alpha's first account: with batches of 100, several."""
    account = seeded.world.tenants["alpha"].accounts[0]
    now = datetime.now(UTC)
    await seeded.mongo[MESSAGES].insert_many(
        [
            {
                "tenant_id": str(account.tenant_id),
                "instagram_account_id": str(account.id),
                "ig_user_id": account.ig_user_id,
                "created_at": now - timedelta(minutes=n),
                "text": f"more {n}",
            }
            for n in range(count)
        ]
    )


async def preview_then_file(
    client: httpx.AsyncClient, auth: Auth, seeded: Seeded
) -> tuple[str, Data]:
    """What the subject has in each store (counted before anything is deleted), and the
    request that then deletes it."""
    body = {"kind": "account", "subject": {"site_name": seeded.world.tenants["alpha"].site_name}}
    preview = await client.post(f"{URL}/preview", json=body, headers=auth())
    assert preview.status_code == 200, preview.text
    expected = {t["purger"]: t["would_delete"] for t in preview.json()["tasks"]}
    created = await client.post(URL, json=body, headers=auth())
    assert created.status_code == 202, created.text
    return str(created.json()["id"]), expected


async def wait_for(
    client: httpx.AsyncClient,
    auth: Auth,
    request_id: str,
    done: Callable[[Data], bool],
    timeout: float = 60,
) -> Data:
    deadline = time.monotonic() + timeout
    while True:
        data: Data = (await client.get(f"{URL}/{request_id}", headers=auth())).json()
        if done(data):
            return data
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.05)


def engine_with(state: AppState, purgers: Mapping[PurgerName, PurgerSlot]) -> Engine:
    return Engine(
        state.settings,
        state.sessionmaker,
        purgers,
        new_worker_id(),
        state.resolver,
        datamap_version=state.datamap.version,
    )


@asynccontextmanager
async def working(engine: Engine) -> AsyncIterator[None]:
    worker = Worker(engine)
    runner = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.stop()
        await runner


async def assert_counts_and_receipt(
    client: httpx.AsyncClient, auth: Auth, data: Data, expected: dict[str, Data]
) -> None:
    """Every store's task counts what the preview found, and so does the receipt."""
    assert data["status"] == "completed", data
    for purger in ("postgres", "mongodb", "s3"):
        assert task(data, purger)["deleted"] == expected[purger], purger
    answer = await client.get(f"{URL}/{data['id']}/receipt", headers=auth())
    assert answer.status_code == 200, answer.text
    stores = {s["store"]: s for s in answer.json()["receipt"]["stores"]}
    for purger in ("postgres", "mongodb", "s3"):
        assert stores[purger]["deleted"] == expected[purger], purger


# --- cut off, resumed ----------------------------------------------------------------------


@pytest.fixture
def restart_ferretdb(ferretdb_server: FerretDBServer) -> Iterator[FerretDBServer]:
    try:
        yield ferretdb_server
    finally:
        ferretdb_server.start()


async def test_a_purge_cut_off_by_an_outage_counts_the_batches_before_it(
    client: httpx.AsyncClient,
    auth: Auth,
    state: AppState,
    seeded: Seeded,
    restart_ferretdb: FerretDBServer,
) -> None:
    await more_messages(seeded, 450)
    request_id, expected = await preview_then_file(client, auth, seeded)
    assert expected["mongodb"] == {MESSAGES: 456, "instagram_comments": 6}

    # MongoDB stops right after the second batch of 100 was deleted.
    listener = StopServerAfterDeletes(restart_ferretdb, after=2)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        restart_ferretdb.url, serverSelectionTimeoutMS=1_000, event_listeners=[listener]
    )
    purger = MongoPurger(mongo, seeded.mongo.name, state.datamap.mongodb, batch_size=100)
    engine = engine_with(state, {**state.purgers, PurgerName.mongodb: purger})
    try:
        async with working(engine):
            cut = await wait_for(
                client, auth, request_id, lambda d: task(d, "mongodb")["status"] == "retrying"
            )
            # The request is still open, and GET already shows what the cut-off attempt did.
            assert cut["status"] == "running"
            assert task(cut, "mongodb")["deleted"] == {MESSAGES: 200}
            restart_ferretdb.start()
            data = await wait_for(client, auth, request_id, lambda d: d["status"] != "running")
    finally:
        # Closing a client whose monitor still tries to connect leaks that socket.
        restart_ferretdb.start()
        await mongo.admin.command("ping")
        await mongo.close()
    assert task(data, "mongodb")["attempts"] >= 2
    await assert_counts_and_receipt(client, auth, data, expected)


async def _lock_waits(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    finally:
        await conn.close()


@pytest.mark.settings(purger_timeout_seconds=4)
async def test_a_purge_timed_out_behind_a_lock_counts_what_it_committed(
    client: httpx.AsyncClient, auth: Auth, state: AppState, seeded: Seeded
) -> None:
    alpha = seeded.world.tenants["alpha"]
    lock = await asyncpg.connect(seeded.pg_dsn)
    try:
        # 12,000 more contacts: three batches of 5,000 before the tenant row is reached.
        await lock.execute(
            "INSERT INTO contacts (id, tenant_id, email)"
            " SELECT gen_random_uuid(), $1, 'fan' || n || '@example.com'"
            " FROM generate_series(1, 12000) AS n",
            alpha.id,
        )
        request_id, expected = await preview_then_file(client, auth, seeded)
        assert expected["postgres"]["contacts"] == 12_003
        # Deleting the tenant row (the last step) waits behind this lock until the timeout.
        held = lock.transaction()
        await held.start()
        await lock.execute("LOCK TABLE tenants IN SHARE MODE")
        async with working(new_engine(state)):
            deadline = time.monotonic() + 60
            while not await _lock_waits(seeded.pg_dsn):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            waiting = (await client.get(f"{URL}/{request_id}", headers=auth())).json()
            # Every table before the tenant row is done, and GET says so while it runs.
            assert task(waiting, "postgres")["status"] == "running"
            assert task(waiting, "postgres")["deleted"] == {
                name: count
                for name, count in expected["postgres"].items()
                if count and name != "tenants"
            }
            await wait_for(
                client, auth, request_id, lambda d: task(d, "postgres")["status"] == "retrying"
            )
            await held.rollback()
            data = await wait_for(client, auth, request_id, lambda d: d["status"] != "running")
    finally:
        await lock.close()
    assert task(data, "postgres")["attempts"] >= 2
    await assert_counts_and_receipt(client, auth, data, expected)


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """A real worker process with the app's settings (as its environment) and a 2 s lease."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELETION_")}
    env.update(
        DELETION_ENVIRONMENT="test",
        DELETION_DATABASE_URL=settings.database_url,
        DELETION_TARGET_POSTGRES_URL=str(settings.target_postgres_url),
        DELETION_MONGODB_URL=str(settings.mongodb_url),
        DELETION_MONGODB_DATABASE=settings.mongodb_database,
        DELETION_MONGODB_BATCH_SIZE=str(settings.mongodb_batch_size),
        DELETION_S3_ENDPOINT_URL=str(settings.s3_endpoint_url),
        DELETION_S3_ENABLED="true",
        DELETION_JWT_SECRET=JWT_SECRET,
        DELETION_HASH_KEY=HASH_KEY,
        DELETION_RECEIPT_SIGNING_KEY=RECEIPT_KEY,
        DELETION_LEASE_SECONDS="2",
        DELETION_WORKER_POLL_SECONDS="0.05",
        DELETION_RETRY_BASE_SECONDS="0.05",
    )
    with log.open("ab") as out:
        return subprocess.Popen([str(WORKER_BIN), "worker"], env=env, stdout=out, stderr=out)


@pytest.mark.parametrize("tracking_url", ["postgres"], indirect=True)
async def test_a_killed_workers_counts_survive_the_takeover(
    client: httpx.AsyncClient,
    auth: Auth,
    state: AppState,
    seeded: Seeded,
    settings: Settings,
    tmp_path: Path,
) -> None:
    alpha = seeded.world.tenants["alpha"]
    log = tmp_path / "workers.log"
    lock = await asyncpg.connect(seeded.pg_dsn)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        await lock.execute(
            "INSERT INTO contacts (id, tenant_id, email)"
            " SELECT gen_random_uuid(), $1, 'fan' || n || '@example.com'"
            " FROM generate_series(1, 12000) AS n",
            alpha.id,
        )
        request_id, expected = await preview_then_file(client, auth, seeded)
        held = lock.transaction()
        await held.start()
        await lock.execute("LOCK TABLE tenants IN SHARE MODE")
        workers.append(start_worker(settings, log))
        deadline = time.monotonic() + 60
        while not await _lock_waits(seeded.pg_dsn):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.05)
        # MongoDB and S3 do not wait for PostgreSQL: let them finish before the kill.
        waiting = await wait_for(
            client,
            auth,
            request_id,
            lambda d: all(task(d, p)["status"] == "succeeded" for p in ("mongodb", "s3")),
        )
        assert task(waiting, "postgres")["deleted"] == {
            name: count
            for name, count in expected["postgres"].items()
            if count and name != "tenants"
        }
        # Killed while it waits to delete the tenant row: that statement never commits.
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        await held.rollback()
        workers.append(start_worker(settings, log))
        data = await wait_for(client, auth, request_id, lambda d: d["status"] != "running")
        workers[1].send_signal(signal.SIGTERM)
        assert workers[1].wait(timeout=20) == 0
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        await lock.close()
    async with state.sessionmaker() as session:
        events = [e.type for e in await list_events(session, uuid.UUID(request_id))]
    assert "lease_taken_over" in events
    assert task(data, "postgres")["attempts"] == 2
    await assert_counts_and_receipt(client, auth, data, expected)


async def test_a_purge_refused_part_way_then_retried_counts_both_attempts(
    client: httpx.AsyncClient, auth: Auth, state: AppState, seeded: Seeded
) -> None:
    alpha = seeded.world.tenants["alpha"]
    request_id, expected = await preview_then_file(client, auth, seeded)
    assert expected["s3"] == {MEDIA: 8, CACHE: 6}
    # A bucket policy (moto enforces it) protects the site files: 2 of MEDIA's 8 versions.
    policy = (
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*",'
        ' "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],'
        f' "Resource": "arn:aws:s3:::{MEDIA}/tenants/{alpha.id}/site/*"}}]}}'
    )
    await seeded.s3.put_bucket_policy(Bucket=MEDIA, Policy=policy)
    async with working(new_engine(state)):
        failed = await wait_for(client, auth, request_id, lambda d: d["status"] == "failed")
        assert task(failed, "s3")["status"] == "failed"
        # The refused attempt still counts what it deleted, the refused batch's rest too.
        assert task(failed, "s3")["deleted"] == {MEDIA: 6, CACHE: 6}
        await seeded.s3.delete_bucket_policy(Bucket=MEDIA)
        retried = await client.post(f"{URL}/{request_id}/retry", headers=auth())
        assert retried.status_code < 300, retried.text
        data = await wait_for(
            client, auth, request_id, lambda d: d["status"] in ("completed", "failed")
        )
    await assert_counts_and_receipt(client, auth, data, expected)


# --- fenced out ----------------------------------------------------------------------------


class TakeLeaseAfterDeletes(monitoring.CommandListener):
    """Another worker takes the request over as soon as ``after`` deletes have succeeded,
    before the purger can report the last one: deterministically between two batches."""

    def __init__(self, tracking_url: str, request_id: str, after: int) -> None:
        self.tracking_url = tracking_url
        self.request_id = uuid.UUID(request_id)
        self.after = after
        self.deletes = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == "delete":
            self.deletes += 1
            if self.deletes == self.after:
                # Blocks this loop until the lease is taken, on purpose (its own loop).
                thread = threading.Thread(target=asyncio.run, args=(self._take(),))
                thread.start()
                thread.join()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    async def _take(self) -> None:
        engine = create_engine(self.tracking_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.update(DeletionRequest)
                    .where(DeletionRequest.id == self.request_id)
                    .values(
                        lease_owner="another-worker",
                        lease_expires_at=datetime.now(UTC) + timedelta(hours=1),
                    )
                )
        finally:
            await engine.dispose()


async def _stored(state: AppState, request_id: str, purger: str) -> dict[str, int]:
    async with state.sessionmaker() as session:
        tasks = await get_tasks(session, uuid.UUID(request_id))
    return next(dict(t.deleted) for t in tasks if t.purger == purger)


@pytest.mark.settings(lease_seconds=60)  # no heartbeat during the test
async def test_a_worker_that_lost_its_lease_adds_no_counts_and_stops(
    client: httpx.AsyncClient,
    auth: Auth,
    state: AppState,
    seeded: Seeded,
    tracking_url: str,
    mongodb_url: str,
) -> None:
    await more_messages(seeded, 450)
    request_id, _ = await preview_then_file(client, auth, seeded)
    # Only the MongoDB step runs here: the others are done already.
    async with state.sessionmaker() as session:
        for t in await get_tasks(session, uuid.UUID(request_id)):
            if t.purger != "mongodb":
                await update_task(session, t.id, status=TaskStatus.succeeded)
        await session.commit()
    listener = TakeLeaseAfterDeletes(tracking_url, request_id, after=2)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, event_listeners=[listener]
    )
    only_mongodb: dict[PurgerName, PurgerSlot] = {
        name: NotConfigured("not in this test") for name in PurgerName
    }
    only_mongodb[PurgerName.mongodb] = MongoPurger(
        mongo, seeded.mongo.name, state.datamap.mongodb, batch_size=100
    )
    engine = engine_with(state, only_mongodb)
    try:
        claim = await engine.claim()
        assert claim is not None and str(claim.request_id) == request_id
        await engine.run_claimed(claim.request_id)
    finally:
        await mongo.close()

    assert listener.deletes == 2
    # The first batch was counted while the lease was held; the second, deleted after the
    # lease was gone, is not, and the worker went no further.
    assert await _stored(state, request_id, "mongodb") == {MESSAGES: 100}
    account = seeded.world.tenants["alpha"].accounts[0]
    left = await seeded.mongo[MESSAGES].count_documents({"instagram_account_id": str(account.id)})
    assert left == 456 - 200
    async with state.sessionmaker() as session:
        (mongo_task,) = [
            t for t in await get_tasks(session, uuid.UUID(request_id)) if t.purger == "mongodb"
        ]
    assert mongo_task.status == TaskStatus.running


# --- the arithmetic ------------------------------------------------------------------------


async def test_a_write_that_failed_is_made_good_by_the_next_and_nothing_counts_twice() -> None:
    written: list[dict[str, int]] = []
    failures = iter([OSError("tracking DB blinked"), None, None])

    async def write(total: dict[str, int]) -> None:
        failure = next(failures)
        if failure is not None:
            raise failure
        written.append(total)

    counts = TaskCounts({"contacts": 7, "tenants": 0}, write)
    await counts.deleted({"contacts": 5})  # not written: the DB blinked
    await counts.deleted({"contacts": 5, "users": 0})  # writes both batches
    await counts.deleted({})  # nothing: no write
    await counts.deleted({"users": 2})
    assert written == [{"contacts": 17, "tenants": 0}, {"contacts": 17, "tenants": 0, "users": 2}]
    # The attempt's result names every table once; reported batches are not added again.
    assert counts.total({"users": 2, "contacts": 10, "site_pages": 0}) == {
        "users": 2,
        "contacts": 17,
        "site_pages": 0,
        "tenants": 0,
    }

    async def lost(total: dict[str, int]) -> None:
        raise LeaseLost

    fenced = TaskCounts({}, lost)
    with pytest.raises(LeaseLost):
        await fenced.deleted({"contacts": 1})
