"""Fixtures for the service itself: a migrated tracking database, the app, a client, tokens.

The tracking store runs on both of its backends: every test that asks for
``tracking_url`` runs once on SQLite and once on the real PostgreSQL server.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
import pytest
from fastapi import FastAPI

from app import db
from app.main import create_app
from app.state import AppState
from testsupport.cli import SettingsForTests, doubles

JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"
HASH_KEY = "test-hash-key-0123456789abcdef"
PUBLIC_BASE_URL = "https://deletion.soundops.test"
RECEIPT_KEY = "dGVzdC1yZWNlaXB0LXNpZ25pbmcta2V5LTMyLWJ5dGU="  # base64 of 32 bytes
ALL_SCOPES = ("deletions:read", "deletions:write", "deletions:admin")


class PgServerLike(Protocol):
    def url(self, dbname: str) -> str: ...
    def create_database(self, name: str, template: str | None = None) -> None: ...
    def drop_database(self, name: str) -> None: ...


@pytest.fixture(scope="session")
def tracking_template(pg_server: PgServerLike) -> str:
    """A PostgreSQL database migrated once; each test gets a copy of it."""
    name = "tracking_template"
    pg_server.drop_database(name)
    pg_server.create_database(name)
    db.upgrade_sync(pg_server.url(name))
    # Alembic's engine is gone; a template must have no open connections.
    return name


@pytest.fixture(params=["sqlite", "postgres"])
def tracking_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tracking.db'}"
        db.upgrade_sync(url)
        yield url
        return
    pg_server: PgServerLike = request.getfixturevalue("pg_server")
    template: str = request.getfixturevalue("tracking_template")
    name = f"tracking_{uuid.uuid4().hex[:12]}"
    pg_server.create_database(name, template=template)
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


def make_settings(tracking_url: str, **overrides: Any) -> SettingsForTests:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": tracking_url,
        "jwt_secret": JWT_SECRET,
        "hash_key": HASH_KEY,
        "public_base_url": PUBLIC_BASE_URL,
        "receipt_signing_key": RECEIPT_KEY,
        "run_worker": False,
    }
    # The session's fake AWS credentials (for moto) must not switch S3 on by themselves.
    values["s3_enabled_setting"] = "s3_endpoint_url" in overrides
    values.update(overrides)
    return SettingsForTests(**values)


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of a test's app: ``@pytest.mark.settings(name=value)``, or override the fixture."""
    marker = request.node.get_closest_marker("settings")
    return dict(marker.kwargs) if marker else {}


@pytest.fixture
def settings(tracking_url: str, settings_overrides: dict[str, Any]) -> SettingsForTests:
    return make_settings(tracking_url, **settings_overrides)


@pytest.fixture
async def app(settings: SettingsForTests) -> AsyncIterator[FastAPI]:
    application = create_app(settings, **doubles(settings))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def state(app: FastAPI) -> AppState:
    services: AppState = app.state.services
    return services


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def mint(
    scopes: tuple[str, ...] | list[str] = ALL_SCOPES,
    *,
    subject: str = "backend",
    secret: Any = JWT_SECRET,
    algorithm: str = "HS256",
    ttl: int = 300,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": subject,
        "scope": " ".join(scopes),
        "aud": "soundops-deletion",
        "iat": now,
        "exp": now + ttl,
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth() -> Callable[..., dict[str, str]]:
    """``auth("deletions:read")`` -> headers with a token carrying those scopes."""

    def headers(*scopes: str, **kwargs: Any) -> dict[str, str]:
        return bearer(mint(scopes or ALL_SCOPES, **kwargs))

    return headers


@pytest.fixture(params=["sqlite", "postgres"])
def empty_tracking_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A tracking database with no tables at all, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    pg_server: PgServerLike = request.getfixturevalue("pg_server")
    name = f"empty_{uuid.uuid4().hex[:12]}"
    pg_server.create_database(name)
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)
