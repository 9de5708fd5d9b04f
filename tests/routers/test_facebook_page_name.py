"""`facebook_page_name` as a REST `meta_data` subject: matched after the one normalisation
(NFKC, case-folded, spaces folded) against the real SoundOps database, and carried out on
that account only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from app.main import create_app
from app.state import AppState
from tests.app_fixtures import make_settings
from tests.engine_support import run_until_settled
from testsupport.seed import World, make_world, seed_postgres

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"


@dataclass
class Stack:
    client: httpx.AsyncClient
    state: AppState
    dsn: str
    world: World

    async def page_accounts(self) -> dict[str, str]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                "SELECT id, facebook_page_name FROM instagram_accounts"
                " WHERE facebook_page_name IS NOT NULL"
            )
        finally:
            await conn.close()
        return {str(r["facebook_page_name"]): str(r["id"]) for r in rows}


PAGES = {"alpha": "Lunar Échoes", "bravo": "Lunar Echoes"}


@pytest.fixture
async def stack(
    tracking_url: str, fresh_pg_database: Any, soundops_template_database: str
) -> AsyncIterator[Stack]:
    database = fresh_pg_database(template=soundops_template_database, prefix="soundops")
    world = make_world()
    await seed_postgres(database.url, world)
    conn = await asyncpg.connect(database.url)
    try:
        for tenant, page in PAGES.items():
            account = world.tenants[tenant].accounts[0]
            await conn.execute(
                "UPDATE instagram_accounts SET facebook_page_name = $1 WHERE id = $2",
                page,
                account.id,
            )
    finally:
        await conn.close()
    app = create_app(make_settings(tracking_url, target_postgres_url=database.url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Stack(client, app.state.services, database.url, world)


@pytest.mark.parametrize(
    ("asked", "page"),
    [
        ("  lunar ÉCHOES  ", "Lunar Échoes"),
        ("LUNAR   échoes", "Lunar Échoes"),
        ("lunar echoes", "Lunar Echoes"),  # the accent is not a case: another Page
    ],
)
async def test_page_name_resolves_to_that_account_only(
    stack: Stack, auth: Auth, asked: str, page: str
) -> None:
    accounts = await stack.page_accounts()
    wanted = accounts[page]
    body = {"kind": "meta_data", "subject": {"facebook_page_name": asked}}

    preview = await stack.client.post(f"{URL}/preview", json=body, headers=auth())
    assert preview.status_code == 200, preview.text
    (postgres,) = [t for t in preview.json()["tasks"] if t["purger"] == "postgres"]
    assert postgres["would_delete"]["instagram_accounts"] == 1

    created = await stack.client.post(URL, json=body, headers=auth())
    assert created.status_code == 202, created.text
    request_id = created.json()["id"]
    statuses = await run_until_settled(stack.state, [request_id])
    assert statuses == {request_id: "completed"}

    after = await stack.page_accounts()
    assert page not in after  # that account is gone ...
    assert set(after) == set(PAGES.values()) - {page}  # ... and only that one
    found = await stack.client.get(
        URL, params={"subject": f"instagram_account_id={wanted}"}, headers=auth()
    )
    assert [item["id"] for item in found.json()["items"]] == [request_id]
    other = accounts[next(p for p in PAGES.values() if p != page)]
    none = await stack.client.get(
        URL, params={"subject": f"instagram_account_id={other}"}, headers=auth()
    )
    assert none.json()["items"] == []


async def test_page_name_with_a_sharp_s_is_found(stack: Stack, auth: Auth) -> None:
    """The one normalisation case-folds ("ß" and "ẞ" are "ss"), which SQL's lower() does not:
    the database only pre-filters, and the comparison is made in Python."""
    tenant = stack.world.tenants["charlie"]
    conn = await asyncpg.connect(stack.dsn)
    try:
        await conn.execute(
            "INSERT INTO instagram_accounts (id, tenant_id, login_family, ig_user_id,"
            " ig_username, facebook_page_name) VALUES ($1, $2, 'facebook', $3, $4, $5)",
            uuid.uuid4(),
            tenant.id,
            str(17841499000000000 + uuid.uuid4().int % 10**6),
            f"strasse.{uuid.uuid4().hex[:6]}",
            "Große Straße",
        )
    finally:
        await conn.close()
    for asked in ("große straße", "  GROẞE   STRAẞE "):
        body = {"kind": "meta_data", "subject": {"facebook_page_name": asked}}
        preview = await stack.client.post(f"{URL}/preview", json=body, headers=auth())
        assert preview.status_code == 200, preview.text
        (postgres,) = [t for t in preview.json()["tasks"] if t["purger"] == "postgres"]
        assert postgres["would_delete"].get("instagram_accounts") == 1, asked
