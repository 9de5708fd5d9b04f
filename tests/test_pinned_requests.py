"""Whom a request from e-mail reaches (issue #14, items 2 and 3), end to end through HTTP
on real PostgreSQL (the SoundOps database and the tracking store), FerretDB and aiosmtpd:

- a request confirmed by its e-mailed link is pinned to what the confirmation saw: the
  owner's tenant and accounts; another tenant's Page of the same (normalised) name, there
  before or appearing after the confirmation, is never reached;
- approving a review of a name that matched several tenants needs a choice of one tenant
  (409 with the number of candidates otherwise), and deletes only that one;
- an admin sees what the message named and the candidates; a REST request by a Page name
  of several different Pages deletes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import asyncpg
import httpx
import pytest
from pymongo import AsyncMongoClient

from app.main import create_app
from app.state import AppState
from tests.app_fixtures import bearer, make_settings, mint
from tests.engine_support import run_until_settled
from tests.services.evidence.test_evidence import until_minimised
from tests.test_end_to_end import _link
from testsupport.receivers import SmtpSink
from testsupport.seed import (
    Tenant,
    World,
    make_world,
    owned_ids,
    seed_mongo,
    seed_postgres,
    snapshot_mongo,
    snapshot_postgres,
)

URL = "/v1/deletion-requests"
ADMIN = ("deletions:admin",)
STRANGER = "someone@freemail.example"

Snapshot = dict[str, dict[str, list[str]]]


@dataclass
class Stack:
    world: World
    client: httpx.AsyncClient
    state: AppState
    dsn: str
    mongo: Any
    smtp: SmtpSink

    async def snapshots(self) -> Snapshot:
        return {
            "postgres": await snapshot_postgres(self.dsn),
            "mongodb": await snapshot_mongo(self.mongo),
        }

    async def mail(self, sender: str, page: str) -> dict[str, Any]:
        message = EmailMessage()
        message["From"] = sender
        message["To"] = "privacy@soundops.example"
        message["Subject"] = "Meta Data Deletion Request"
        message["Message-ID"] = f"<{uuid.uuid4().hex}@mail.example>"
        message.set_content(
            f"Hello,\n\nplease delete your data of our page.\n\nFacebook Page: {page}\n"
        )
        answer = await self.client.post(
            "/v1/inbound-email",
            content=message.as_bytes(),
            headers={"Content-Type": "message/rfc822", **bearer(mint(("deletions:write",)))},
        )
        assert answer.status_code == 202, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def confirm_link(self, owner: str) -> None:
        (sent,) = [m for _, rcpts, m in self.smtp.messages if rcpts == [owner]]
        path = "/" + _link(sent).split("/", 3)[3]
        assert (await self.client.post(path)).status_code == 303

    async def name_page(self, account_id: uuid.UUID, page: str) -> None:
        """Give a tenant's connected account (its own, different Page) this Page name."""
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                "UPDATE instagram_accounts SET facebook_page_name = $1 WHERE id = $2",
                page,
                account_id,
            )
        finally:
            await conn.close()

    async def needles(self, tenant: Tenant) -> list[str]:
        return await owned_ids(self.dsn, tenant.id) + [a.ig_user_id for a in tenant.accounts]


def rows_of(snapshot: Snapshot, needles: list[str]) -> dict[str, list[str]]:
    """Every row and document (of every store) that names one of ``needles``."""
    return {
        f"{store}.{table}": [row for row in rows if any(n in row for n in needles)]
        for store, tables in snapshot.items()
        for table, rows in tables.items()
    }


@pytest.fixture
async def stack(tracking_url: str, soundops_db: str, mongodb_url: str) -> AsyncIterator[Stack]:
    world = make_world()
    await seed_postgres(soundops_db, world)
    mongo_name = f"pinned_{uuid.uuid4().hex[:8]}"
    mongo_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    await seed_mongo(mongo_client[mongo_name], world)
    smtp = SmtpSink()
    settings = make_settings(
        tracking_url,
        target_postgres_url=soundops_db,
        mongodb_url=mongodb_url,
        mongodb_database=mongo_name,
        smtp_url=smtp.url,
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield Stack(
                    world, client, app.state.services, soundops_db, mongo_client[mongo_name], smtp
                )
    finally:
        smtp.close()
        await mongo_client.drop_database(mongo_name)
        await mongo_client.close()


async def test_a_confirmed_page_request_deletes_only_the_confirmed_tenant(stack: Stack) -> None:
    """The issue's reproduction: the owner confirms for their Page "X"; another tenant's
    different Page is called "X " (a trailing space). Only the owner's data goes."""
    alpha, bravo = stack.world.tenants["alpha"], stack.world.tenants["bravo"]
    page = alpha.accounts[0].facebook_page_name
    assert page is not None
    await stack.name_page(bravo.accounts[0].id, page + " ")
    before = await stack.snapshots()
    untouched = rows_of(before, await stack.needles(bravo))

    filed = await stack.mail(alpha.owner_email, page)
    assert filed["outcome"] == "awaiting_confirmation"
    await stack.confirm_link(alpha.owner_email)
    request_id = filed["request_id"]
    assert await run_until_settled(stack.state, [request_id]) == {request_id: "completed"}

    after = await stack.snapshots()
    assert rows_of(after, await stack.needles(bravo)) == untouched
    assert rows_of(after, [str(alpha.accounts[0].id)])["postgres.instagram_accounts"] == []
    assert rows_of(after, [str(alpha.accounts[0].id)])["mongodb.instagram_messages"] == []


async def test_a_name_that_matches_more_after_confirmation_is_not_widened(stack: Stack) -> None:
    alpha, bravo = stack.world.tenants["alpha"], stack.world.tenants["bravo"]
    page = alpha.accounts[0].facebook_page_name
    assert page is not None
    filed = await stack.mail(alpha.owner_email, page)
    assert filed["outcome"] == "awaiting_confirmation"
    await stack.confirm_link(alpha.owner_email)
    # After the confirmation, before the worker runs: another tenant's Page takes the name.
    await stack.name_page(bravo.accounts[0].id, page.upper())
    untouched = rows_of(await stack.snapshots(), await stack.needles(bravo))

    request_id = filed["request_id"]
    assert await run_until_settled(stack.state, [request_id]) == {request_id: "completed"}
    after = await stack.snapshots()
    assert rows_of(after, await stack.needles(bravo)) == untouched
    assert rows_of(after, [str(alpha.accounts[0].id)])["postgres.instagram_accounts"] == []


async def test_approve_without_a_choice_of_one_tenant_is_refused(stack: Stack) -> None:
    """The same Page name at two tenants, asked for by a stranger: approve {} (or a subject
    that still names both) is a 409 with the number of candidates, and deletes nothing."""
    alpha, bravo = stack.world.tenants["alpha"], stack.world.tenants["bravo"]
    page = alpha.accounts[0].facebook_page_name
    assert page is not None
    await stack.name_page(bravo.accounts[0].id, page)
    filed = await stack.mail(STRANGER, page)
    assert filed["outcome"] == "needs_review"
    request_id = filed["request_id"]
    before = await stack.snapshots()
    admin = bearer(mint(ADMIN))
    for body in ({}, {"subject": {"facebook_page_name": page}}, None):
        refused = await stack.client.post(f"{URL}/{request_id}/approve", json=body, headers=admin)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["candidates"] == 2 and "2 " in refused.json()["detail"]
        assert page not in refused.text
    shown = (await stack.client.get(f"{URL}/{request_id}", headers=admin)).json()
    assert shown["status"] == "needs_review"
    assert await stack.snapshots() == before


async def test_approving_a_review_with_a_choice_deletes_only_that_tenant(stack: Stack) -> None:
    alpha, bravo = stack.world.tenants["alpha"], stack.world.tenants["bravo"]
    page = alpha.accounts[0].facebook_page_name
    assert page is not None
    await stack.name_page(bravo.accounts[0].id, f"  {page.upper()} ")
    filed = await stack.mail(STRANGER, page)
    assert filed["outcome"] == "needs_review"
    request_id = filed["request_id"]

    # The reviewer sees what the message named and the candidates; a reader does not.
    admin = bearer(mint(ADMIN))
    shown = (await stack.client.get(f"{URL}/{request_id}", headers=admin)).json()
    assert shown["review_reason"] == "several_tenants"
    review = shown["review"]
    assert review["reason"] == "several_tenants"
    assert review["named"] == {"facebook_page_name": page}
    assert sorted((c["tenant_id"], c["instagram_account_id"]) for c in review["candidates"]) == (
        sorted((str(t.id), str(t.accounts[0].id)) for t in (alpha, bravo))
    )
    assert {c["site_name"] for c in review["candidates"]} == {alpha.site_name, bravo.site_name}
    reader = bearer(mint(("deletions:read",)))
    read = (await stack.client.get(f"{URL}/{request_id}", headers=reader)).json()
    assert read["review"] is None and read["review_reason"] == "several_tenants"

    # The choice of one tenant: only that tenant's connection of that name is deleted.
    untouched = rows_of(await stack.snapshots(), await stack.needles(alpha))
    approved = await stack.client.post(
        f"{URL}/{request_id}/approve", json={"subject": {"tenant_id": str(bravo.id)}}, headers=admin
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "pending" and approved.json()["review"] is None
    assert await run_until_settled(stack.state, [request_id]) == {request_id: "completed"}
    after = await stack.snapshots()
    assert rows_of(after, await stack.needles(alpha)) == untouched
    assert rows_of(after, [str(bravo.accounts[0].id)])["postgres.instagram_accounts"] == []


async def test_what_a_review_showed_is_minimised_with_the_request(stack: Stack) -> None:
    alpha, bravo = stack.world.tenants["alpha"], stack.world.tenants["bravo"]
    page = alpha.accounts[0].facebook_page_name
    assert page is not None
    await stack.name_page(bravo.accounts[0].id, page)
    filed = await stack.mail(STRANGER, page)
    assert filed["outcome"] == "needs_review"
    request_id = filed["request_id"]
    rejected = await stack.client.post(f"{URL}/{request_id}/reject", headers=bearer(mint(ADMIN)))
    assert rejected.status_code == 200
    minimised = await until_minimised(stack.state, request_id)
    assert minimised.review is None and minimised.pinned is None
    assert page not in repr(minimised.__dict__)


async def test_a_rest_request_by_a_page_name_of_several_pages_deletes_nothing(
    stack: Stack,
) -> None:
    """Two different Pages (different facebook_page_id) with one normalised name: the name
    is ambiguous, as an owner_email of several accounts is: the request fails, and says so."""
    alpha, bravo = stack.world.tenants["alpha"], stack.world.tenants["bravo"]
    page = alpha.accounts[0].facebook_page_name
    assert page is not None
    await stack.name_page(bravo.accounts[0].id, f"{page.lower()}  ")
    before = await stack.snapshots()
    body = {"kind": "meta_data", "subject": {"facebook_page_name": page}}
    writer = bearer(mint(("deletions:write", "deletions:read")))

    preview = await stack.client.post(f"{URL}/preview", json=body, headers=writer)
    assert preview.status_code == 422 and "2 different Pages" in preview.json()["detail"]
    created = await stack.client.post(URL, json=body, headers=writer)
    assert created.status_code == 202, created.text
    request_id = created.json()["id"]
    assert await run_until_settled(stack.state, [request_id]) == {request_id: "failed"}
    failed = (await stack.client.get(f"{URL}/{request_id}", headers=writer)).json()
    assert "2 different Pages" in failed["status_reason"] and page not in str(failed)
    assert await stack.snapshots() == before


async def test_two_pages_of_one_name_at_the_owners_tenant_need_a_choice(stack: Stack) -> None:
    """Even the owner's own message does not choose between two different Pages that share
    a name: an operator must (several_pages), and approve {} is refused."""
    alpha = stack.world.tenants["alpha"]
    page = alpha.accounts[0].facebook_page_name
    assert page is not None
    await stack.name_page(alpha.accounts[1].id, page.upper())  # another Page (id) of alpha's
    filed = await stack.mail(alpha.owner_email, page)
    assert filed["outcome"] == "needs_review"
    admin = bearer(mint(ADMIN))
    shown = (await stack.client.get(f"{URL}/{filed['request_id']}", headers=admin)).json()
    assert shown["review_reason"] == "several_pages"
    assert len(shown["review"]["candidates"]) == 2
    refused = await stack.client.post(f"{URL}/{filed['request_id']}/approve", headers=admin)
    assert refused.status_code == 409 and refused.json()["candidates"] == 2
    assert stack.smtp.messages == []  # no link to anyone
