"""Engine, sessions and migrations of the tracking database."""

from __future__ import annotations

import asyncio
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

import migrations
from app.settings import normalise_db_url

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent

# A pooled connection idle for longer than this is pinged before it is handed out.
PING_IDLE_SECONDS = 1.0
POOL_SIZE = 40


def create_engine(url: str, *, ping_idle_seconds: float = PING_IDLE_SECONDS) -> AsyncEngine:
    url = normalise_db_url(url)
    # Bound parameters can hold personal data: never let them into error messages or logs.
    kwargs: dict[str, Any] = {
        "hide_parameters": True,
        # A worker runs several requests with several tasks each, every task with its
        # own session, and intake may have as many requests in flight: a small pool would
        # make them queue for connections. One fixed size (no overflow connections opened
        # and closed under load); the most recently returned connection goes out first,
        # so that a lull leaves the others idle long enough to be pinged.
        "pool_size": POOL_SIZE,
        "max_overflow": 0,
        "pool_use_lifo": True,
    }
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 30}, "hide_parameters": True}
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        _configure_sqlite(engine)
    else:
        _ping_idle_connections(engine, ping_idle_seconds)
        _keep_driver_connections(engine, ping_idle_seconds)
    return engine


def _ping_idle_connections(engine: AsyncEngine, idle_seconds: float) -> None:
    """Ping a pooled connection before handing it out only when it sat idle for longer
    than ``idle_seconds`` (instead of ``pool_pre_ping``: a round-trip on every checkout,
    the largest single cost of an intake request). A ping that fails replaces the
    connection (the pool retries the checkout with a new one). A connection that died
    within the last second fails its statement instead: the app answers that 503 with
    Retry-After (app/http_errors.py), and the pool replaces the connection."""

    @sa.event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine.sync_engine, "checkout")
    def _ping_stale(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # whatever the driver raises: the connection is gone
            raise sa.exc.DisconnectionError("idle connection failed its ping") from exc


# What a statement on a pooled connection raises when the connection (or the server) is
# gone: a server closing it (class 08), an administrator or a shutdown terminating it
# (class 57: "terminating connection due to administrator command"), the driver finding it
# closed, the socket failing.
_DRIVER_DISCONNECTS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InterfaceError,
    OSError,
)


class _Lane:
    """How single-statement callers (intake, Meta's callbacks) get a connection of one
    engine. The line they wait in: first come, first served, for half of the pool (in the
    pool's own queue a returned connection goes to whoever asks next, also before the ones
    waiting, so under load a waiter could be passed over again and again: seconds at 64
    connections, the p99 of intake); the other half stays for the worker and the reads.

    And the connections they returned within the last ``idle_seconds``, kept checked out
    for the next one (most recent first): a checkout and checkin through SQLAlchemy's pool
    cost an intake request about 90 us of CPU, taking one from here about 5. Only what the
    pool would hand out unpinged is kept (used within ``idle_seconds``): older ones go back
    to the pool on a timer, with their idle time, so its checkout pings them as before."""

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self.gate = asyncio.Semaphore(max(1, POOL_SIZE // 2))
        self._idle: list[tuple[Any, float]] = []  # (pooled connection, returned at), oldest first
        self._timer: asyncio.TimerHandle | None = None

    def take(self) -> Any | None:
        """The most recently returned connection still fresh, or None."""
        self.release_stale()
        return self._idle.pop()[0] if self._idle else None

    def give(self, pooled: Any) -> None:
        """Keep a connection whose statement succeeded for the next caller."""
        if len(self._idle) >= max(1, POOL_SIZE // 2):
            pooled.close()
            return
        self._idle.append((pooled, time.monotonic()))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.idle_seconds, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.release_stale()
        if self._idle:
            wait = self._idle[0][1] + self.idle_seconds - time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(max(wait, 0.0), self._on_timer)

    def release_stale(self) -> None:
        """Return what sat here for ``idle_seconds`` or longer to the pool, with the time it
        has been idle (the pool's checkout pings it)."""
        now = time.monotonic()
        while self._idle and now - self._idle[0][1] >= self.idle_seconds:
            pooled, since = self._idle.pop(0)
            _checkin(pooled, idle_since=since)

    def release_all(self, *, invalidate: bool = False) -> None:
        """Return every kept connection to the pool (``invalidate``: drop them, their
        server may be gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, []
        for pooled, since in idle:
            if invalidate and pooled.is_valid:
                pooled.invalidate()
            _checkin(pooled, idle_since=since)


def _checkin(pooled: Any, *, idle_since: float) -> None:
    info = pooled.info  # the connection record's: it outlives the checkin
    pooled.close()
    if "idle_since" in info:  # set by the pool's checkin listener: the idle time is older
        info["idle_since"] = idle_since


_LANES: weakref.WeakKeyDictionary[AsyncEngine, _Lane] = weakref.WeakKeyDictionary()


def _lane(engine: AsyncEngine) -> _Lane:
    lane = _LANES.get(engine)
    if lane is None:
        lane = _LANES[engine] = _Lane(PING_IDLE_SECONDS)
    return lane


def _keep_driver_connections(engine: AsyncEngine, idle_seconds: float) -> None:
    _LANES[engine] = _Lane(idle_seconds)

    @sa.event.listens_for(engine.sync_engine, "engine_disposed")
    def _disposed(_engine: Any) -> None:
        # Kept connections belong to the pool just disposed: close them with it.
        lane = _LANES.get(engine)
        if lane is not None:
            lane.release_all(invalidate=True)


async def release_driver_connections(engine: AsyncEngine) -> None:
    """Return the connections kept for single statements to the pool (before a dispose,
    which then closes them as it closes the pool's own)."""
    lane = _LANES.get(engine)
    if lane is not None:
        lane.release_all()


class DriverConnection:
    """A connection of the engine's pool used through its driver (asyncpg) directly:
    checked out as by ``engine.connect()`` (the idle ping, the pool's size), but no
    SQLAlchemy ``Connection`` around it (its events, its isolation-level switch to
    autocommit and back, its result wrapping cost a third of an intake request's database
    code) and no transaction: each statement commits on its own (autocommit), so run only
    single statements that are atomic on their own. Returned to the engine's lane (above),
    which keeps it for the next single statement for a second. A statement that finds the
    connection gone raises ``OperationalError`` with ``connection_invalidated`` (answered
    503, as by ``engine.connect()``) and the pool drops the connection, and the lane every
    connection it kept; on any failure, a cancellation too, the connection is dropped
    rather than handed out again mid-statement. PostgreSQL only.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._lane = _lane(engine)
        self._pooled: Any = None

    async def __aenter__(self) -> DriverConnection:
        await self._lane.gate.acquire()
        try:
            self._pooled = self._lane.take() or await self._engine.raw_connection()
        except BaseException:
            self._lane.gate.release()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pooled, self._pooled = self._pooled, None
        try:
            if exc is None and pooled.is_valid:
                self._lane.give(pooled)
            else:
                if pooled.is_valid:
                    pooled.invalidate(exc if isinstance(exc, Exception) else None)
                pooled.close()
        finally:
            self._lane.gate.release()

    async def fetchrow(self, statement: str, *args: Any) -> Any:
        driver = self._pooled.driver_connection
        try:
            return await driver.fetchrow(statement, *args)
        except _DRIVER_DISCONNECTS as exc:
            self._pooled.invalidate(exc)
            self._lane.release_all(invalidate=True)  # their server may be gone too
            # Neither the statement's parameters nor the server's message (hide_parameters).
            raise sa.exc.OperationalError(None, None, exc, connection_invalidated=True) from exc
        except Exception as exc:
            if driver.is_closed():
                self._pooled.invalidate(exc)
                raise sa.exc.OperationalError(None, None, exc, connection_invalidated=True) from exc
            raise


def postgres_engine(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine | None:
    """The engine a sessionmaker is bound to when it is PostgreSQL's (where single
    statements can run on a ``DriverConnection``), else None."""
    engine = sessionmaker.kw.get("bind")
    if isinstance(engine, AsyncEngine) and engine.dialect.name == "postgresql":
        return engine
    return None


def _configure_sqlite(engine: AsyncEngine) -> None:
    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    config.set_main_option("sqlalchemy.url", normalise_db_url(url).replace("%", "%%"))
    return config


def upgrade_sync(url: str, revision: str = "head") -> None:
    """Apply migrations from synchronous code (no event loop may run in this thread)."""
    command.upgrade(alembic_config(url), revision)


def downgrade_sync(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations (alembic's env runs its own event loop, so it gets a thread)."""
    await asyncio.to_thread(upgrade_sync, url, revision)


async def downgrade(url: str, revision: str) -> None:
    await asyncio.to_thread(downgrade_sync, url, revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current)
