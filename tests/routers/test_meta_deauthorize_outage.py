"""A verified deauthorize is never lost: recorded and answered 200 while the SoundOps
database is stopped or not configured, expanded into disconnects by the worker once it
can be read, exactly once (replays, restarts, several workers, a worker that died)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app import repository
from app.main import create_app
from app.models import DeletionRequest, MetaDeauthorization, utcnow
from app.services.execution import Worker
from app.services.identities import identity_hash
from app.services.intake.meta.signed_request import sign
from app.state import AppState
from app.wiring import new_engine
from tests.app_fixtures import make_settings
from tests.conftest import SOUNDOPS_SCHEMA
from testsupport.harness import LocalPostgres, start_postgres
from testsupport.seed import World, make_world, seed_postgres

FB_SECRET = "facebook-login-app-secret-0123456789"
IG_SECRET = "instagram-login-app-secret-0123456789"


@pytest.fixture(scope="module")
def own_soundops_server() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of its own for the SoundOps database, so that stopping it
    leaves the tracking database (on the shared server) running."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def soundops(own_soundops_server: LocalPostgres) -> AsyncIterator[tuple[str, World]]:
    """A seeded SoundOps database on that server: its URL and the world in it."""
    server = own_soundops_server
    name = server.unique_database_name("soundops")
    server.create_database(name)
    server.psql_file(name, SOUNDOPS_SCHEMA)
    world = make_world()
    await seed_postgres(server.url(name), world)
    try:
        yield server.url(name), world
    finally:
        if not server.is_running():
            server.start()
        server.drop_database(name)


@dataclass
class Service:
    state: AppState
    client: httpx.AsyncClient

    async def deauthorize(self, user_id: str, *, instagram: bool = False) -> httpx.Response:
        return await self.client.post(
            "/meta/instagram/deauthorize" if instagram else "/meta/deauthorize",
            data={"signed_request": signed(user_id, instagram=instagram)},
        )

    async def requests(self) -> list[DeletionRequest]:
        async with self.state.sessionmaker() as session:
            return list((await session.execute(sa.select(DeletionRequest))).scalars())

    async def records(self) -> list[MetaDeauthorization]:
        async with self.state.sessionmaker() as session:
            return list((await session.execute(sa.select(MetaDeauthorization))).scalars())


_SIGNED: dict[tuple[str, bool], str] = {}


def signed(user_id: str, *, instagram: bool = False) -> str:
    """One signed_request per person and family in a test run: posting it again is a
    replay of the same callback."""
    key = (user_id, instagram)
    if key not in _SIGNED:
        secret = IG_SECRET if instagram else FB_SECRET
        body = {"algorithm": "HMAC-SHA256", "user_id": user_id, "issued_at": int(time.time())}
        _SIGNED[key] = sign(body, secret.encode())
    return _SIGNED[key]


@asynccontextmanager
async def service(tracking_url: str, **overrides: Any) -> AsyncIterator[Service]:
    settings = make_settings(
        tracking_url, meta_app_secret=FB_SECRET, instagram_app_secret=IG_SECRET, **overrides
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield Service(app.state.services, client)


async def test_deauthorize_while_the_soundops_database_is_stopped_is_recorded_and_expanded_later(
    tracking_url: str, own_soundops_server: LocalPostgres, soundops: tuple[str, World]
) -> None:
    url, world = soundops
    account = world.tenants["alpha"].accounts[0]
    assert account.facebook_user_id is not None
    async with service(tracking_url, target_postgres_url=url) as svc:
        await asyncio.to_thread(own_soundops_server.stop)
        try:
            down = await svc.deauthorize(account.facebook_user_id)
            assert down.status_code == 200, down.text
            assert down.json() == {
                "expanded": False,
                "disconnects": None,
                "skipped_reconnected": None,
            }
            again = await svc.deauthorize(account.facebook_user_id)  # Meta retries
            assert again.json() == down.json()
            (record,) = await svc.records()
            assert record.user_id == account.facebook_user_id and record.expanded_at is None
            assert await svc.requests() == []
            # The worker's sweep while it is still down: nothing lost, tried again later.
            assert await new_engine(svc.state, "w0").expand_deauthorizations() == 0
        finally:
            await asyncio.to_thread(own_soundops_server.start)
        (record,) = await svc.records()
        assert record.expanded_at is None and record.user_id is not None
        # Due again (the sweep's backoff), as the worker would find it later.
        async with svc.state.sessionmaker() as session:
            await session.execute(sa.update(MetaDeauthorization).values(run_after=utcnow()))
            await session.commit()
        assert await new_engine(svc.state, "w1").expand_deauthorizations() == 1
        (request,) = await svc.requests()
        assert request.kind == "instagram_disconnect" and request.source == "meta_callback"
        assert request.subject == {
            "tenant_id": str(account.tenant_id),
            "instagram_account_id": str(account.id),
        }
        (record,) = await svc.records()
        assert record.expanded_at is not None and record.disconnects == 1
        assert record.user_id is None  # minimised once expanded; its keyed hash stays
        assert record.user_hash and account.facebook_user_id not in record.user_hash
        # Delivered once more: the same outcome, nothing filed twice.
        replay = await svc.deauthorize(account.facebook_user_id)
        assert replay.json() == {"expanded": True, "disconnects": 1, "skipped_reconnected": 0}
        assert len(await svc.requests()) == 1


async def test_deauthorize_without_a_soundops_database_survives_a_restart_and_the_worker_expands_it(
    tracking_url: str, soundops: tuple[str, World]
) -> None:
    url, world = soundops
    account = world.tenants["bravo"].accounts[0]
    async with service(tracking_url) as unconfigured:
        answer = await unconfigured.deauthorize(account.ig_user_id, instagram=True)
        assert answer.status_code == 200, answer.text
        assert answer.json()["expanded"] is False
        assert await new_engine(unconfigured.state, "w").expand_deauthorizations() == 0
    # Restarted, now with the SoundOps database: the worker loop files the disconnect.
    async with service(tracking_url, target_postgres_url=url, worker_poll_seconds=0.05) as svc:
        worker = Worker(new_engine(svc.state, "worker"))
        runner = asyncio.create_task(worker.run())
        try:
            # Until the expansion is recorded, not only filed: a sweep cut off by the stop
            # between the two is taken up again by the next worker (by design).
            async with asyncio.timeout(20):
                while not (
                    await svc.requests() and all(r.expanded_at for r in await svc.records())
                ):
                    await asyncio.sleep(0.05)
        finally:
            worker.stop()
            await runner
        (request,) = await svc.requests()
        assert request.kind == "instagram_disconnect"
        # The worker may have run it to its end (and minimised it) before it stopped: the
        # account's id, or its keyed hash.
        key = svc.state.settings.effective_hash_key
        assert request.subject["instagram_account_id"] in (
            str(account.id),
            "hmac-sha256:" + identity_hash(key, "instagram_account_id", str(account.id)),
        )
        (record,) = await svc.records()
        assert record.expanded_at is not None and record.user_id is None


async def test_several_workers_and_a_dead_one_expand_a_deauthorization_exactly_once(
    tracking_url: str, soundops: tuple[str, World]
) -> None:
    url, world = soundops
    account = world.tenants["alpha"].accounts[0]
    assert account.facebook_user_id is not None
    async with service(tracking_url) as unconfigured:
        assert (await unconfigured.deauthorize(account.facebook_user_id)).status_code == 200
    async with service(tracking_url, target_postgres_url=url) as svc:
        (record,) = await svc.records()
        meta = svc.state.meta
        # A worker that claimed it, filed the disconnect and died before recording that.
        async with svc.state.sessionmaker() as session:
            claimed = await repository.claim_deauthorization(
                session, record.id, "dead-worker", utcnow(), timedelta(seconds=0)
            )
        assert claimed is not None
        directory = svc.state.meta._directory
        assert directory is not None
        assert await meta._file_disconnects(directory, claimed) == (1, 0)
        assert len(await svc.requests()) == 1
        # Its lease has run out: several workers sweep at once; one expands it.
        engines = [new_engine(svc.state, f"worker-{n}") for n in range(4)]
        results = await asyncio.gather(*(e.expand_deauthorizations() for e in engines))
        assert sorted(results) == [0, 0, 0, 1]
        (request,) = await svc.requests()
        assert request.subject["instagram_account_id"] == str(account.id)
        (record,) = await svc.records()
        assert record.expanded_at is not None and record.disconnects == 1
        assert record.lease_owner is None
        assert sum(await asyncio.gather(*(e.expand_deauthorizations() for e in engines))) == 0
        assert len(await svc.requests()) == 1


async def test_a_burst_of_deauthorizations_is_answered_once_recorded_and_none_is_lost(
    tracking_url: str, soundops: tuple[str, World]
) -> None:
    """More callbacks at once than a process expands inline: each answered 200 once
    recorded; the workers' sweeps (two at once) expand the rest; every person's accounts
    get exactly one disconnect each."""
    url, world = soundops
    accounts = [
        a
        for tenant in world.tenants.values()
        for a in tenant.accounts
        if a.facebook_user_id is not None
    ]
    people = sorted({str(a.facebook_user_id) for a in accounts})
    strangers = [str(10_215_554_000_000 + n) for n in range(12)]  # nothing connected
    async with service(tracking_url, target_postgres_url=url) as svc:
        answers = await asyncio.gather(*(svc.deauthorize(u) for u in [*people, *strangers]))
        assert [a.status_code for a in answers] == [200] * len(answers)
        assert len(await svc.records()) == len(people) + len(strangers)
        engines = [new_engine(svc.state, f"worker-{n}") for n in range(2)]
        async with asyncio.timeout(20):
            while not all(r.expanded_at for r in await svc.records()):
                await asyncio.gather(*(e.expand_deauthorizations() for e in engines))
        records = await svc.records()
        assert all(r.lease_owner is None and r.user_id is None for r in records)
        assert sum(r.disconnects or 0 for r in records) == len(accounts)
        filed = sorted(r.subject["instagram_account_id"] for r in await svc.requests())
        assert filed == sorted(str(a.id) for a in accounts)
