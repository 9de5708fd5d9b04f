"""instagram_disconnect intake checks that the account belongs to the tenant."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"


@pytest.fixture
def settings_overrides(target_postgres_url: str) -> dict[str, Any]:
    return {"target_postgres_url": target_postgres_url}


@pytest.fixture
async def owned_account(target_postgres_dsn: str) -> AsyncIterator[tuple[str, str, str]]:
    """A tenant with one Instagram account, plus another tenant; removed afterwards."""
    tenant, other_tenant, account = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    connection = await asyncpg.connect(target_postgres_dsn)
    try:
        for t in (tenant, other_tenant):
            await connection.execute(
                "INSERT INTO tenants (id, site_name, owner_email) VALUES ($1, $2, $3)",
                t,
                f"site-{t.hex[:8]}",
                f"{t.hex[:8]}@example.com",
            )
        await connection.execute(
            "INSERT INTO instagram_accounts (id, tenant_id, login_family, ig_user_id, ig_username)"
            " VALUES ($1, $2, 'instagram', $3, $4)",
            account,
            tenant,
            str(uuid.uuid4().int)[:17],
            f"user_{account.hex[:8]}",
        )
        yield str(tenant), str(other_tenant), str(account)
    finally:
        await connection.execute("DELETE FROM instagram_accounts WHERE id = $1", account)
        await connection.execute(
            "DELETE FROM tenants WHERE id = ANY($1::uuid[])", [tenant, other_tenant]
        )
        await connection.close()


async def test_disconnect_of_an_owned_account_is_accepted(
    client: httpx.AsyncClient, auth: Auth, owned_account: tuple[str, str, str]
) -> None:
    tenant, _, account = owned_account
    response = await client.post(
        URL,
        json={
            "kind": "instagram_disconnect",
            "subject": {"tenant_id": tenant, "instagram_account_id": account},
        },
        headers=auth("deletions:write"),
    )
    assert response.status_code == 202, response.text


async def test_disconnect_of_another_tenants_account_is_404(
    client: httpx.AsyncClient, auth: Auth, owned_account: tuple[str, str, str]
) -> None:
    _, other_tenant, account = owned_account
    for subject in (
        {"tenant_id": other_tenant, "instagram_account_id": account},
        {"tenant_id": other_tenant, "instagram_account_id": str(uuid.uuid4())},
    ):
        response = await client.post(
            URL, json={"kind": "instagram_disconnect", "subject": subject}, headers=auth()
        )
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert account not in response.text and other_tenant not in response.text
    listing = (await client.get(URL, headers=auth())).json()
    assert listing["items"] == []


async def test_disconnect_answers_503_when_the_soundops_database_is_down(
    tracking_url: str, auth: Auth
) -> None:
    from app.main import create_app
    from tests.app_fixtures import make_settings

    app = create_app(
        make_settings(tracking_url, target_postgres_url="postgresql://x@127.0.0.1:9/soundops")
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                URL,
                json={
                    "kind": "instagram_disconnect",
                    "subject": {
                        "tenant_id": str(uuid.uuid4()),
                        "instagram_account_id": str(uuid.uuid4()),
                    },
                },
                headers=auth(),
            )
            assert response.status_code == 503
            listing = (await client.get(URL, headers=auth())).json()
    assert listing["items"] == []
