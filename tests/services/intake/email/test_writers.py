"""E-mailed ``meta_data`` requests naming a username that nobody on file has: the check
whether that person wrote here (``intake/email/writers.py``), on real FerretDB.

Only what they wrote -> review as ``third_party_only`` (nobody on file can confirm);
a customer who also wrote -> as before; nothing at all, or a name that is only a prefix
of a writer's -> ``no_match``; MongoDB down -> filed all the same, ``third_party_unchecked``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from app.main import create_app
from app.state import AppState
from tests.app_fixtures import bearer, make_settings, mint
from tests.services.intake.email.corpus import TRUSTED_AUTHSERV_ID
from tests.services.intake.email.world import EMAIL_WORLD, seed_email_world
from testsupport.receivers import SmtpSink

URL = "/v1/inbound-email"
REQUESTS = "/v1/deletion-requests"
ADMIN = ("deletions:read", "deletions:write", "deletions:admin")
FAN = "fan.club_jo"  # wrote comments and messages to two tenants; no connection anywhere
COPPER = "copper.owls"  # a customer's connection, who also commented elsewhere
_ids = itertools.count()


def mail(body: str, sender: str = "jo@freemail.example") -> bytes:
    domain = sender.split("@")[1]
    return (
        f"Authentication-Results: {TRUSTED_AUTHSERV_ID}; dmarc=pass header.from={domain}\r\n"
        f"From: <{sender}>\r\nTo: privacy@soundops.example\r\n"
        "Subject: Meta Data Deletion Request\r\n"
        f"Message-ID: <writers-{uuid.uuid4().hex}@{domain}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def documents() -> dict[str, list[dict[str, Any]]]:
    """What people wrote to lunar's and velvet's accounts: the fan, the customer copper.owls,
    and someone whose username the fan's is a prefix of."""
    now = datetime.now(UTC)
    docs: dict[str, list[dict[str, Any]]] = {"instagram_comments": [], "instagram_messages": []}
    for tenant_key, writer in itertools.product(("lunar", "velvet"), (FAN, COPPER, "fan.club_jo2")):
        tenant = EMAIL_WORLD.tenant(tenant_key)
        account = tenant.accounts[0]
        base = {
            "_id": ObjectId(),
            "tenant_id": str(tenant.id),
            "instagram_account_id": str(account.id),
            "ig_user_id": account.ig_user_id,
            "from_username": writer,
            "text": "hello",
            "created_at": now,
        }
        n = next(_ids)
        docs["instagram_comments"].append(base | {"media_id": f"m{n}", "comment_id": f"c{n}"})
        docs["instagram_messages"].append(
            base | {"_id": ObjectId(), "thread_id": f"t{n}", "from_id": f"u{n}"}
        )
    return docs


@dataclass
class Intake:
    state: AppState
    client: httpx.AsyncClient
    smtp: SmtpSink

    async def send(self, raw: bytes) -> dict[str, Any]:
        answer = await self.client.post(
            URL,
            content=raw,
            headers={"Content-Type": "message/rfc822", **bearer(mint(("deletions:write",)))},
        )
        assert answer.status_code == 202, answer.text
        return dict(answer.json())

    async def request(self, request_id: str) -> dict[str, Any]:
        answer = await self.client.get(f"{REQUESTS}/{request_id}", headers=bearer(mint(ADMIN)))
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def filed(self, raw: bytes) -> dict[str, Any]:
        """The request a message filed, as an administrator's GET shows it."""
        sent = await self.send(raw)
        assert sent["request_id"], sent
        return await self.request(sent["request_id"])


IntakeFactory = Callable[..., Any]


@pytest.fixture
async def intake_with(
    tracking_url: str, fresh_pg_database: Any, soundops_template_database: str
) -> AsyncIterator[IntakeFactory]:
    """Starts the service's e-mail intake with the given MongoDB settings (none: no MongoDB)."""
    database = fresh_pg_database(template=soundops_template_database, prefix="writers")
    await seed_email_world(database.url)
    smtp = SmtpSink()
    apps: list[Any] = []

    async def start(**mongo: Any) -> Intake:
        settings = make_settings(
            tracking_url,
            target_postgres_url=database.url,
            smtp_url=smtp.url,
            email_authserv_id=TRUSTED_AUTHSERV_ID,
            **mongo,
        )
        app = create_app(settings)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        apps.append((lifespan, client))
        return Intake(app.state.services, client, smtp)

    try:
        yield start
    finally:
        for lifespan, client in reversed(apps):
            await client.aclose()
            await lifespan.__aexit__(None, None, None)
        smtp.close()


@pytest.fixture
async def intake(intake_with: IntakeFactory, mongodb_url: str) -> AsyncIterator[Intake]:
    name = f"writers_{uuid.uuid4().hex[:8]}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    try:
        for collection, docs in documents().items():
            await client[name][collection].insert_many(docs)
        yield await intake_with(mongodb_url=mongodb_url, mongodb_database=name)
    finally:
        await client.drop_database(name)
        await client.close()


async def test_a_username_that_only_wrote_here_is_reviewed_as_third_party_only(
    intake: Intake,
) -> None:
    filed = await intake.filed(mail(f"Please delete everything I wrote. I am @{FAN}"))

    assert filed["status"] == "needs_review"
    assert filed["review_reason"] == "third_party_only"
    assert filed["review"] == {
        "reason": "third_party_only",
        "named": {"ig_username": FAN},
        "candidates": [],
    }
    assert intake.smtp.messages == []  # nobody on file to mail a link to
    # Spelled in another case it is the same person (the one normalisation).
    again = await intake.filed(mail(FAN.upper(), sender="jo@mgmt-agency.example"))
    assert again["review_reason"] == "third_party_only"


async def test_a_customer_who_also_wrote_elsewhere_is_matched_as_before(intake: Intake) -> None:
    copper = EMAIL_WORLD.tenant("copper")
    owner = await intake.filed(mail(COPPER, sender=copper.owner_email))
    assert owner["status"] == "awaiting_confirmation"
    stranger = await intake.filed(mail(COPPER, sender="someone@evil.example"))
    assert (stranger["status"], stranger["review_reason"]) == ("needs_review", "sender_not_on_file")
    assert [c["tenant_id"] for c in stranger["review"]["candidates"]] == [str(copper.id)]


async def test_a_username_nobody_has_and_nobody_wrote_is_no_match(intake: Intake) -> None:
    filed = await intake.filed(mail("Please delete the data of @nobody.at.all"))
    assert (filed["status"], filed["review_reason"]) == ("needs_review", "no_match")


@pytest.mark.parametrize("named", ["fan.club", "fan.club_j", "fan", "fan.club_jo2x"])
async def test_a_name_that_is_only_part_of_a_writers_username_is_no_match(
    intake: Intake, named: str
) -> None:
    """Equality only: a prefix (or an extension) of someone's username reaches nobody."""
    filed = await intake.filed(mail(named))
    assert (filed["review_reason"], filed["review"]["named"]) == (
        "no_match",
        {"ig_username": named},
    )


async def test_approving_a_third_party_review_pins_the_request_to_no_connection(
    intake: Intake,
) -> None:
    filed = await intake.filed(mail(FAN))
    approved = await intake.client.post(
        f"{REQUESTS}/{filed['id']}/approve", json={}, headers=bearer(mint(ADMIN))
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "pending"
    stored = await intake.state.requests.get(uuid.UUID(filed["id"]))
    assert stored.pinned == {"tenant_ids": [], "account_ids": []}
    assert stored.subject == {"ig_username": FAN}


async def test_mongodb_down_files_the_request_saying_the_check_could_not_run(
    intake_with: IntakeFactory,
) -> None:
    down = await intake_with(
        mongodb_url="mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=60000",
        mongodb_database="soundops",
    )
    filed = await down.filed(mail(f"Delete what I wrote: {FAN}"))
    assert (filed["status"], filed["review_reason"]) == ("needs_review", "third_party_unchecked")
    assert filed["review"]["named"] == {"ig_username": FAN}
    assert FAN not in filed["status_url"]


async def test_without_mongodb_in_the_deployment_a_stranger_is_no_match(
    intake_with: IntakeFactory,
) -> None:
    plain = await intake_with()
    filed = await plain.filed(mail(FAN))
    assert (filed["status"], filed["review_reason"]) == ("needs_review", "no_match")
