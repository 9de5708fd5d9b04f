"""Completed means done where the plan reaches (issue 14, item 8).

A production deployment without MongoDB declares it in ``DELETION_ABSENT_STORES``. A
request then completes with the MongoDB task skipped, and the status page, receipt,
webhook and e-mail say "deleted and verified" only for the stores that ran, naming
MongoDB as "not part of this deployment". Real PostgreSQL, moto S3, a fake Graph API,
a webhook receiver and an SMTP server; the MongoDB server runs too, and keeps its data.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiobotocore.session import get_session
from pymongo import AsyncMongoClient

from app import db
from app.main import create_app
from app.state import AppState
from tests.app_fixtures import bearer, make_settings, mint
from tests.engine_support import run_until_settled
from testsupport.fake_graph import FakeGraph
from testsupport.receivers import SmtpSink, WebhookReceiver
from testsupport.seed import (
    FERNET_KEY,
    World,
    create_buckets,
    make_world,
    seed_mongo,
    seed_postgres,
)

URL = "/v1/deletion-requests"
ABSENT = "not part of this deployment"
# The claim of a request done in every store; never for one with a store left out.
COMPLETED_EVERYWHERE = "the data has been deleted and the deletion verified"
FULL_CLAIM = "Completed: " + COMPLETED_EVERYWHERE + "</strong>"

pytestmark = pytest.mark.slow


@pytest.fixture
def tracking_url(pg_server: Any, tracking_template: str) -> Any:
    name = f"tracking_{uuid.uuid4().hex[:12]}"
    pg_server.create_database(name, template=tracking_template)
    yield pg_server.url(name)
    pg_server.drop_database(name)


@dataclass
class Deployment:
    world: World
    client: httpx.AsyncClient
    state: AppState
    receiver: WebhookReceiver
    smtp: SmtpSink
    mongo: Any

    async def completed_and_confirmed(self, request_id: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (await self.state.requests.get(uuid.UUID(request_id))).minimised_at is None:
            assert time.monotonic() < deadline, "not completed and confirmed in time"
            await asyncio.sleep(0.1)


@pytest.fixture
async def deployment(
    tracking_url: str,
    fresh_pg_database: Any,
    soundops_template_database: str,
    mongodb_url: str,
    s3_endpoint_url: str,
    moto_server: Any,
) -> AsyncIterator[Deployment]:
    world = make_world()
    database = fresh_pg_database(template=soundops_template_database, prefix="soundops")
    await seed_postgres(database.url, world)
    # The MongoDB server exists and holds the tenant's messages: declared absent, it is
    # not touched, and nothing may claim it was.
    mongo_name = f"absent_{uuid.uuid4().hex[:8]}"
    mongo_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    await seed_mongo(mongo_client[mongo_name], world)
    moto_server.reset()
    graph = FakeGraph().start()
    graph.add_world(world)
    receiver, smtp = WebhookReceiver(), SmtpSink()
    settings = make_settings(
        tracking_url,
        environment="production",  # start-up passes: MongoDB is declared absent
        absent_stores="mongodb",
        target_postgres_url=database.url,
        s3_endpoint_url=s3_endpoint_url,
        token_encryption_key=FERNET_KEY.decode(),
        meta_graph_url=graph.facebook_url,
        instagram_graph_url=graph.instagram_url,
        notify_webhook_url=receiver.url,
        notify_webhook_secret="absent-webhook-secret-0123456789",
        smtp_url=smtp.url,
        run_worker=True,
        worker_poll_seconds=0.05,
        retry_base_seconds=0.05,
    )
    app = create_app(settings)
    try:
        async with get_session().create_client(
            "s3", endpoint_url=s3_endpoint_url, region_name="us-east-1"
        ) as s3:
            await create_buckets(s3)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    yield Deployment(
                        world, client, app.state.services, receiver, smtp, mongo_client[mongo_name]
                    )
    finally:
        graph.close()
        receiver.close()
        smtp.close()
        await mongo_client.drop_database(mongo_name)
        await mongo_client.close()


async def test_a_store_not_part_of_the_deployment_is_named_and_never_claimed_deleted(
    deployment: Deployment,
) -> None:
    alpha = deployment.world.tenants["alpha"]
    messages_before = await deployment.mongo["instagram_messages"].count_documents({})
    created = await deployment.client.post(
        URL,
        json={
            "kind": "account",
            "subject": {"site_name": alpha.site_name},
            "notify_email": "owner@example.com",
        },
        headers=bearer(mint()),
    )
    assert created.status_code == 202, created.text
    request_id, code = created.json()["id"], created.json()["confirmation_code"]
    await deployment.completed_and_confirmed(request_id)

    data = (await deployment.client.get(f"{URL}/{request_id}", headers=bearer(mint()))).json()
    assert data["status"] == "completed"
    tasks = {t["purger"]: t for t in data["tasks"]}
    assert tasks["mongodb"]["status"] == "skipped"
    assert tasks["mongodb"]["error"].startswith(ABSENT)
    assert {tasks[s]["status"] for s in ("postgres", "s3", "meta_graph")} == {"succeeded"}
    assert await deployment.mongo["instagram_messages"].count_documents({}) == messages_before

    # The status page (HTML and JSON).
    page = (await deployment.client.get(f"/deletion-status/{code}")).text
    assert FULL_CLAIM not in page
    assert re.search(r"Instagram messages and comments</th><td>" + ABSENT + "</td>", page), page
    assert re.search(r"Account database</th><td>deleted and verified</td>", page), page
    as_json = (
        await deployment.client.get(
            f"/deletion-status/{code}", headers={"Accept": "application/json"}
        )
    ).json()
    assert as_json["summary"] != COMPLETED_EVERYWHERE
    stores = {s["store"]: s for s in as_json["stores"]}
    assert (stores["mongodb"]["verified"], stores["mongodb"]["outcome"]) == (False, ABSENT)
    assert (stores["postgres"]["verified"], stores["postgres"]["outcome"]) == (
        True,
        "deleted and verified",
    )

    # The receipt.
    receipt = (
        await deployment.client.get(f"{URL}/{request_id}/receipt", headers=bearer(mint()))
    ).json()["receipt"]
    kept = {s["store"]: s for s in receipt["stores"]}
    assert (kept["mongodb"]["verified"], kept["mongodb"]["skipped_reason"]) == (False, ABSENT)
    assert kept["postgres"]["verified"] and kept["postgres"]["skipped_reason"] is None

    # The webhook.
    (delivery,) = deployment.receiver.deliveries
    payload = json.loads(delivery.body)
    hooked = {s["store"]: s for s in payload["stores"]}
    assert hooked["mongodb"]["verified"] is False
    assert (hooked["mongodb"]["outcome"], hooked["mongodb"]["skipped"]) == (ABSENT, "absent")
    assert hooked["s3"]["verified"] is True
    assert payload["summary"] != COMPLETED_EVERYWHERE

    # The e-mail.
    # One message per address on file (notify_email, the owner's address read before).
    messages = deployment.smtp.messages
    assert messages and all(len(recipients) == 1 for _, recipients, _ in messages)
    ((_, _, message),) = [m for m in messages if m[1] == ["owner@example.com"]]
    raw = message.get_payload(decode=True)  # quoted-printable or not: the text itself
    assert isinstance(raw, bytes)
    text = raw.decode()
    assert f"- mongodb: {ABSENT}" in text
    assert "- postgres: deleted and verified" in text
    assert "mongodb: deleted" not in text and "carried out and verified" not in text


async def test_a_store_merely_unconfigured_outside_production_is_never_called_deleted(
    tmp_path: Any,
) -> None:
    """Test (and development) may run without a store: skipped as "not configured", which
    is neither "deleted" nor "nothing to delete"."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'tracking.db'}"
    await db.upgrade(url)
    app = create_app(make_settings(url))
    async with app.router.lifespan_context(app):
        state: AppState = app.state.services
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            created = (
                await client.post(
                    URL,
                    json={"kind": "account", "subject": {"site_name": "unconfigured-band"}},
                    headers=bearer(mint()),
                )
            ).json()
            await run_until_settled(state, [created["id"]])
            page = (await client.get(f"/deletion-status/{created['confirmation_code']}")).text
            as_json = (
                await client.get(
                    f"/deletion-status/{created['confirmation_code']}",
                    headers={"Accept": "application/json"},
                )
            ).json()
    assert as_json["status"] == "completed"
    assert FULL_CLAIM not in page and "nothing to delete" not in page
    assert {s["outcome"] for s in as_json["stores"]} == {
        "not configured: nothing was deleted there"
    }
    assert not any(s["verified"] for s in as_json["stores"])


def test_the_reasons_for_a_skip_are_never_the_same_words() -> None:
    from app.purgers.base import NotConfigured, SkipKind
    from app.services.claims import SKIP_TEXT

    assert SkipKind.of(NotConfigured("mongodb", absent=True).reason) is SkipKind.absent
    assert SkipKind.of(NotConfigured("MongoDB (DELETION_MONGODB_URL)").reason) is (
        SkipKind.not_configured
    )
    # Rows recorded before these words existed.
    assert SkipKind.of("MongoDB is not configured (DELETION_MONGODB_URL)") is (
        SkipKind.not_configured
    )
    old_graph = "DELETION_TOKEN_ENCRYPTION_KEY is not set: the Graph API calls are skipped"
    assert SkipKind.of(old_graph) is SkipKind.not_configured
    assert SkipKind.of("the data map names no MongoDB collection for account requests") is (
        SkipKind.not_applicable
    )
    assert len(set(SKIP_TEXT.values())) == len(SkipKind)
    assert SkipKind.absent.untouched and not SkipKind.not_applicable.untouched
