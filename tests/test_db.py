"""The tracking database's pool: connections that died while pooled (a PostgreSQL restart,
a failover, an idle timeout) are replaced, never answered with a 500."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from app.db import DriverConnection, create_engine, release_driver_connections
from app.main import create_app
from app.models import DeletionRequest
from tests.app_fixtures import bearer, make_settings, mint
from testsupport.harness.services import PostgresServer, to_asyncpg_url


@pytest.fixture
def tracking_pg(pg_server: PostgresServer, tracking_template: str) -> Iterator[str]:
    """A migrated tracking database on PostgreSQL (its name), for this test alone."""
    name = f"tracking_{uuid.uuid4().hex[:12]}"
    pg_server.create_database(name, template=tracking_template)
    try:
        yield name
    finally:
        pg_server.drop_database(name)


def kill_connections(pg_server: PostgresServer, database: str) -> int:
    """Terminate every other session on ``database``, as a server restart would."""
    out = pg_server.psql(
        database,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()",
    )
    return int(out)


async def test_a_pooled_connection_that_died_while_idle_is_replaced_before_use(
    pg_server: PostgresServer, tracking_pg: str
) -> None:
    engine = create_engine(to_asyncpg_url(pg_server.url(tracking_pg)), ping_idle_seconds=0)
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(sa.text("SELECT 1")) == 1
        assert kill_connections(pg_server, tracking_pg) == 1
        # Idle for longer than ping_idle_seconds: pinged, found dead, replaced.
        async with engine.connect() as connection:
            assert await connection.scalar(sa.text("SELECT 2")) == 2
    finally:
        await engine.dispose()


async def test_a_connection_that_died_unpinged_fails_as_a_store_error_then_is_replaced(
    pg_server: PostgresServer, tracking_pg: str
) -> None:
    engine = create_engine(to_asyncpg_url(pg_server.url(tracking_pg)), ping_idle_seconds=3600)
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(sa.text("SELECT 1")) == 1
        assert kill_connections(pg_server, tracking_pg) == 1
        # Not pinged: the statement fails, with the connection marked invalidated (which
        # app/http_errors.py answers with a 503), and the pool drops the connection.
        with pytest.raises(DBAPIError) as failed:
            async with engine.connect() as connection:
                await connection.scalar(sa.text("SELECT 2"))
        assert failed.value.connection_invalidated
        async with engine.connect() as connection:
            assert await connection.scalar(sa.text("SELECT 3")) == 3
    finally:
        await engine.dispose()


def checked_out(engine: AsyncEngine) -> int:
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


async def test_a_driver_connection_that_died_unpinged_fails_as_a_store_error_then_is_replaced(
    pg_server: PostgresServer, tracking_pg: str
) -> None:
    engine = create_engine(to_asyncpg_url(pg_server.url(tracking_pg)), ping_idle_seconds=3600)
    try:
        async with DriverConnection(engine) as connection:
            assert (await connection.fetchrow("SELECT 1"))[0] == 1
        assert checked_out(engine) == 1  # kept for the next single statement
        assert kill_connections(pg_server, tracking_pg) == 1
        # The same as through SQLAlchemy's Connection: a store error marked invalidated
        # (a 503), and the pool drops the connection.
        with pytest.raises(DBAPIError) as failed:
            async with DriverConnection(engine) as connection:
                await connection.fetchrow("SELECT 2")
        assert failed.value.connection_invalidated
        async with DriverConnection(engine) as connection:
            assert (await connection.fetchrow("SELECT 3"))[0] == 3
        # Autocommit: what a statement wrote is there for another connection at once.
        async with DriverConnection(engine) as connection:
            await connection.fetchrow("CREATE TABLE driver_probe AS SELECT 1 AS n")
        async with engine.connect() as other:
            assert await other.scalar(sa.text("SELECT n FROM driver_probe")) == 1
        # A statement that fails otherwise raises the driver's error, and the connection
        # is not handed out again (it could be mid-statement).
        with pytest.raises(Exception, match="driver_nowhere"):
            async with DriverConnection(engine) as connection:
                await connection.fetchrow("SELECT * FROM driver_nowhere")
        assert checked_out(engine) == 0
    finally:
        await engine.dispose()


def backends(pg_server: PostgresServer, database: str) -> int:
    """Sessions on ``database`` but the asking one."""
    out = pg_server.psql(
        database,
        f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' "
        "AND pid <> pg_backend_pid()",
    )
    return int(out)


async def test_a_driver_connection_is_kept_for_the_next_statement_then_returned_to_the_pool(
    pg_server: PostgresServer, tracking_pg: str
) -> None:
    engine = create_engine(to_asyncpg_url(pg_server.url(tracking_pg)), ping_idle_seconds=0.3)
    checkouts = []
    sa.event.listen(engine.sync_engine, "checkout", lambda *_: checkouts.append(1))
    try:
        pids = []
        for _ in range(3):
            async with DriverConnection(engine) as connection:
                pids.append((await connection.fetchrow("SELECT pg_backend_pid()"))[0])
        # One checkout from the pool, the same connection for all three statements.
        assert len(checkouts) == 1
        assert len(set(pids)) == 1
        assert checked_out(engine) == 1
        # Unused for ping_idle_seconds: back in the pool.
        for _ in range(200):
            if checked_out(engine) == 0:
                break
            await asyncio.sleep(0.01)
        assert checked_out(engine) == 0
        # With the time it has been idle since its statement, not since it went back: the
        # pool pings it at once, finds it dead and replaces it; the statement succeeds.
        assert kill_connections(pg_server, tracking_pg) == 1
        async with DriverConnection(engine) as connection:
            assert (await connection.fetchrow("SELECT 1"))[0] == 1
        assert len(checkouts) == 2
    finally:
        await engine.dispose()


async def test_a_dead_driver_connection_drops_every_kept_one(
    pg_server: PostgresServer, tracking_pg: str
) -> None:
    engine = create_engine(to_asyncpg_url(pg_server.url(tracking_pg)), ping_idle_seconds=3600)
    try:
        async with DriverConnection(engine) as first, DriverConnection(engine) as second:
            await first.fetchrow("SELECT 1")
            await second.fetchrow("SELECT 1")
        assert checked_out(engine) == 2  # both kept
        assert kill_connections(pg_server, tracking_pg) == 2
        with pytest.raises(DBAPIError) as failed:
            async with DriverConnection(engine) as connection:
                await connection.fetchrow("SELECT 2")
        assert failed.value.connection_invalidated
        # The other kept connection died with the server: dropped, not handed out.
        assert checked_out(engine) == 0
        async with DriverConnection(engine) as connection:
            assert (await connection.fetchrow("SELECT 3"))[0] == 3
    finally:
        await engine.dispose()


@pytest.mark.parametrize("released_first", [True, False], ids=["released", "disposed only"])
async def test_kept_driver_connections_close_with_the_engine(
    pg_server: PostgresServer, tracking_pg: str, released_first: bool
) -> None:
    engine = create_engine(to_asyncpg_url(pg_server.url(tracking_pg)), ping_idle_seconds=3600)
    async with DriverConnection(engine) as first, DriverConnection(engine) as second:
        await first.fetchrow("SELECT 1")
        await second.fetchrow("SELECT 1")
    assert backends(pg_server, tracking_pg) == 2
    if released_first:  # as the app's shutdown does
        await release_driver_connections(engine)
        assert checked_out(engine) == 0
    await engine.dispose()
    for _ in range(200):
        if backends(pg_server, tracking_pg) == 0:
            break
        await asyncio.sleep(0.01)
    assert backends(pg_server, tracking_pg) == 0
    # The engine still works after a dispose (a new pool), with a new connection.
    async with DriverConnection(engine) as connection:
        assert (await connection.fetchrow("SELECT 1"))[0] == 1
    await engine.dispose()


async def test_intake_on_connections_killed_under_it_answers_503_or_202_never_500(
    pg_server: PostgresServer, tracking_pg: str
) -> None:
    app = create_app(make_settings(pg_server.url(tracking_pg)))
    headers = bearer(mint())
    statuses = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def create() -> httpx.Response:
                body = {"kind": "account", "subject": {"tenant_id": str(uuid.uuid4())}}
                return await client.post("/v1/deletion-requests", json=body, headers=headers)

            assert (await create()).status_code == 202
            kill_connections(pg_server, tracking_pg)
            # Its pooled connection is dead: refused with a retry (not pinged, within a
            # second), or stored (pinged and replaced); never an unexpected error.
            answer = await create()
            statuses.append(answer.status_code)
            assert answer.status_code in (202, 503)
            if answer.status_code == 503:
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.headers["retry-after"]
            statuses += [(await create()).status_code for _ in range(3)]
            assert statuses[1:] == [202, 202, 202]
        async with app.state.services.sessionmaker() as session:
            stored = await session.scalar(sa.select(sa.func.count(DeletionRequest.id)))
    # Every request answered 202 is stored, and nothing else.
    assert stored == 1 + statuses.count(202)
