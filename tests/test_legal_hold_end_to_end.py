"""A legal hold end to end: the real purgers against PostgreSQL, FerretDB, moto and the fake
Graph API. A hold on a tenant holds a request that named the tenant another way (its site
name: the runner sees the tenant once resolved, before any purger runs) and leaves
everything of the tenant in every store, while another tenant's request runs; released,
the request runs to the end and deletes what it must."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from app.repository import list_events
from tests.app_fixtures import bearer, mint
from tests.test_end_to_end import (  # noqa: F401  (the seeded stack, as end to end uses it)
    Stack,
    _mentions,
    extra_settings,
    stack,
    tracking_url,
    world,
)
from testsupport.seed import owned_ids

URL = "/v1/deletion-requests"
ADMIN = ("deletions:admin",)

pytestmark = pytest.mark.slow


async def wait_for(on: Stack, request_id: str, wanted: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        data = (await on.client.get(f"{URL}/{request_id}", headers=bearer(mint()))).json()
        if data["status"] == wanted:
            return data
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.1)


async def test_a_held_tenant_keeps_its_data_until_released_end_to_end(
    stack: Stack,  # noqa: F811  (the fixture imported above)
) -> None:
    alpha, bravo = stack.world.tenants["alpha"], stack.world.tenants["bravo"]
    alpha_needles = await owned_ids(stack.pg_dsn, alpha.id) + [a.ig_user_id for a in alpha.accounts]
    bravo_needles = await owned_ids(stack.pg_dsn, bravo.id) + [a.ig_user_id for a in bravo.accounts]
    before = await stack.snapshots()

    placed = await stack.client.post(
        "/v1/holds",
        json={"subject": {"tenant_id": str(alpha.id)}, "reason": "Preservation order 17/2026"},
        headers=bearer(mint(ADMIN)),
    )
    assert placed.status_code == 201
    held = await stack.client.post(
        URL,
        json={"kind": "account", "subject": {"site_name": alpha.site_name}},
        headers=bearer(mint()),
    )
    assert held.status_code == 202 and held.json()["status"] == "pending"  # named by site
    free = await stack.client.post(
        URL,
        json={"kind": "account", "subject": {"site_name": bravo.site_name}},
        headers=bearer(mint()),
    )
    held_id, free_id = held.json()["id"], free.json()["id"]

    waiting = await wait_for(stack, held_id, "on_hold")
    assert {t["status"] for t in waiting["tasks"]} == {"pending"}  # no purger ran for it
    assert (await stack.wait(free_id))["status"] == "completed"

    during = await stack.snapshots()
    assert _mentions(during, alpha_needles) == _mentions(before, alpha_needles)
    assert _mentions(during, bravo_needles) == {}
    assert not [
        c
        for c in stack.graph.calls
        if c.method == "DELETE"
        and any(
            a.ig_user_id in c.path or (a.facebook_user_id or "-") in c.path for a in alpha.accounts
        )
    ]
    page = await stack.client.get(f"/deletion-status/{waiting['confirmation_code']}")
    assert "On hold" in page.text and "Preservation" not in page.text
    async with stack.state.sessionmaker() as session:
        kinds = [e.type for e in await list_events(session, uuid.UUID(held_id))]
    assert "resolved" in kinds and kinds[-1] == "held"

    released = await stack.client.delete(
        f"/v1/holds/{placed.json()['id']}", headers=bearer(mint(ADMIN))
    )
    assert released.status_code == 204
    done = await stack.wait(held_id)
    assert done["status"] == "completed", done
    assert {t["status"] for t in done["tasks"]} == {"succeeded"}
    after = await stack.snapshots()
    assert _mentions(after, alpha_needles) == {}
