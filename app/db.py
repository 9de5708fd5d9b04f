"""Engine, sessions and migrations of the tracking database."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

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
