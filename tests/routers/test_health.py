"""Liveness and readiness."""

from __future__ import annotations

import httpx

from app.main import create_app
from tests.app_fixtures import make_settings


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readyz_checks_the_tracking_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"tracking_db": "ok"}


async def test_readyz_is_503_when_the_tracking_database_is_down() -> None:
    # Port 9 on loopback: nothing listens there.
    app = create_app(make_settings("postgresql://nobody@127.0.0.1:9/none"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["tracking_db"].startswith("unavailable")


async def test_intake_answers_503_when_the_tracking_database_is_down() -> None:
    from tests.app_fixtures import bearer, mint

    app = create_app(make_settings("postgresql://nobody@127.0.0.1:9/none"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                "/v1/deletion-requests",
                json={"kind": "account", "subject": {"site_name": "x-site"}},
                headers=bearer(mint()),
            )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    assert response.headers["content-type"] == "application/problem+json"


async def test_correlation_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "abc-123.x"})
    assert given.headers["x-request-id"] == "abc-123.x"
    made = await client.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    junk = await client.get("/healthz", headers={"X-Request-ID": "<script>alert(1)</script>"})
    assert junk.headers["x-request-id"] != "<script>alert(1)</script>"
    assert len(junk.headers["x-request-id"]) == 32


async def test_readyz_no_longer_depends_on_the_stores(tracking_url: str) -> None:
    """A store that is down makes /readyz/stores 503, naming it; /readyz stays 200."""
    settings = make_settings(tracking_url, mongodb_url="mongodb://127.0.0.1:9/?timeoutMS=500")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/readyz")
            stores = await client.get("/readyz/stores")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"tracking_db": "ok"}
    assert stores.status_code == 503
    body = stores.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["mongodb"].startswith("unavailable")
    modes = {item["location"]: item for item in body["retention"]}
    assert modes["soundops.instagram_messages"]["mode"] == "none"
    assert modes["soundops-ig-cache"] == {
        "store": "s3",
        "location": "soundops-ig-cache",
        "mode": "none",
        "reason": "store not configured",
    }
