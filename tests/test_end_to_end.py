"""End to end: the API and its worker against real PostgreSQL, FerretDB, moto and a fake Graph API.

Each kind of request is carried out on a seeded world of three tenants; what the kind
removes is gone from every store, everything else is unchanged, the Meta step ran before
the tokens were deleted, the public status page says so without naming anyone, and no log
line names anyone either.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from aiobotocore.session import get_session
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from app.main import create_app
from app.models import Base
from app.repository import list_events
from app.services.intake.email.mailbox import MailboxPoller
from app.services.intake.meta.signed_request import sign
from app.state import AppState
from tests.app_fixtures import bearer, make_settings, mint
from testsupport.fake_graph import FakeGraph, graph_error, http_error
from testsupport.receivers import SmtpSink, WebhookReceiver
from testsupport.seed import (
    CACHE,
    FERNET_KEY,
    MEDIA,
    World,
    create_buckets,
    make_world,
    mentioning,
    owned_ids,
    seed_mongo,
    seed_postgres,
    seed_s3,
    snapshot_mongo,
    snapshot_postgres,
    snapshot_s3,
)
from testsupport.seed import without as _without

FB_SECRET = "facebook-login-app-secret-for-e2e-0123"
URL = "/v1/deletion-requests"

pytestmark = pytest.mark.slow


@pytest.fixture
def tracking_url(pg_server: Any, tracking_template: str) -> Iterator[str]:
    """End-to-end runs on the PostgreSQL tracking store only (both are covered elsewhere)."""
    name = f"tracking_{uuid.uuid4().hex[:12]}"
    pg_server.create_database(name, template=tracking_template)
    yield pg_server.url(name)
    pg_server.drop_database(name)


@dataclass
class Stack:
    world: World
    client: httpx.AsyncClient
    state: AppState
    graph: FakeGraph
    pg_dsn: str
    mongo: Any
    s3: Any
    receiver: WebhookReceiver
    smtp: SmtpSink

    async def snapshots(self) -> dict[str, Any]:
        return {
            "postgres": await snapshot_postgres(self.pg_dsn),
            "mongodb": await snapshot_mongo(self.mongo),
            "s3": await snapshot_s3(self.s3),
        }

    async def wait(self, request_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            data: dict[str, Any] = (
                await self.client.get(f"{URL}/{request_id}", headers=bearer(mint()))
            ).json()
            if data["status"] in ("completed", "failed"):
                return data
            assert time.monotonic() < deadline, data
            await asyncio.sleep(0.1)

    async def wait_status(self, request_id: str) -> str:
        data = (await self.client.get(f"{URL}/{request_id}", headers=bearer(mint()))).json()
        return str(data["status"])

    async def minimised(self, request_id: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (await self.state.requests.get(uuid.UUID(request_id))).minimised_at is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)

    async def tracking_dump(self) -> str:
        chunks = []
        async with self.state.tracking_db.connect() as conn:
            for table in Base.metadata.sorted_tables:
                chunks += [repr(tuple(r)) for r in (await conn.execute(sa.select(table))).all()]
        return "\n".join(chunks)

    async def events(self, request_id: str) -> list[tuple[str, str | None]]:
        async with self.state.sessionmaker() as session:
            return [(e.type, e.purger) for e in await list_events(session, uuid.UUID(request_id))]


@pytest.fixture
def world(request: pytest.FixtureRequest) -> World:
    """The seeded world; ``parametrize("world", ["shared_instagram"], indirect=True)`` adds
    tenant delta, with a connection of alpha's first Instagram account (testsupport/seed.py)."""
    return make_world(shared_instagram=getattr(request, "param", None) == "shared_instagram")


@pytest.fixture
def extra_settings() -> dict[str, Any]:
    """Settings a test adds (``parametrize("extra_settings", [{...}])`` overrides it)."""
    return {}


@pytest.fixture
async def stack(
    world: World,
    extra_settings: dict[str, Any],
    tracking_url: str,
    fresh_pg_database: Any,
    soundops_template_database: str,
    mongodb_url: str,
    s3_endpoint_url: str,
    moto_server: Any,
) -> AsyncIterator[Stack]:
    database = fresh_pg_database(template=soundops_template_database, prefix="soundops")
    await seed_postgres(database.url, world)
    mongo_name = f"e2e_{uuid.uuid4().hex[:8]}"
    mongo_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    await seed_mongo(mongo_client[mongo_name], world)
    moto_server.reset()
    graph = FakeGraph().start()
    graph.add_world(world)
    receiver, smtp = WebhookReceiver(), SmtpSink()
    settings = make_settings(
        tracking_url,
        **{"worker_poll_seconds": 0.05, "retry_base_seconds": 0.05, **extra_settings},
        target_postgres_url=database.url,
        mongodb_url=mongodb_url,
        mongodb_database=mongo_name,
        s3_endpoint_url=s3_endpoint_url,
        token_encryption_key=FERNET_KEY.decode(),
        meta_graph_url=graph.facebook_url,
        instagram_graph_url=graph.instagram_url,
        meta_app_secret=FB_SECRET,
        notify_webhook_url=receiver.url,
        notify_webhook_secret="e2e-webhook-secret-0123456789",
        smtp_url=smtp.url,
        run_worker=True,
    )
    app = create_app(settings)
    try:
        async with get_session().create_client(
            "s3", endpoint_url=s3_endpoint_url, region_name="us-east-1"
        ) as s3:
            await create_buckets(s3)
            await seed_s3(s3, world)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    yield Stack(
                        world,
                        client,
                        app.state.services,
                        graph,
                        database.url,
                        mongo_client[mongo_name],
                        s3,
                        receiver,
                        smtp,
                    )
    finally:
        graph.close()
        receiver.close()
        smtp.close()
        await mongo_client.drop_database(mongo_name)
        await mongo_client.close()
    assert graph.errors == []


def _mentions(snapshot: dict[str, Any], needles: list[str]) -> dict[str, int]:
    hits: dict[str, int] = {}
    for store, tables in snapshot.items():
        for name, rows in tables.items():
            count = sum(1 for row in rows if any(n in str(row) for n in needles))
            if count:
                hits[f"{store}.{name}"] = count
    return hits


def _before(
    events: list[tuple[str, str | None]], first: tuple[str, str], then: tuple[str, str]
) -> bool:
    return events.index(first) < events.index(then)


async def _status_page(stack: Stack, data: dict[str, Any]) -> str:
    page = await stack.client.get(f"/deletion-status/{data['confirmation_code']}")
    assert page.status_code == 200
    for identifier in stack.world.identifiers():
        assert identifier not in page.text, "the status page names the subject"
    return page.text


async def test_account_deletion_end_to_end(stack: Stack, capfd: pytest.CaptureFixture[str]) -> None:
    alpha = stack.world.tenants["alpha"]
    needles = await owned_ids(stack.pg_dsn, alpha.id) + [a.ig_user_id for a in alpha.accounts]
    before = await stack.snapshots()
    created = await stack.client.post(
        URL,
        json={"kind": "account", "subject": {"site_name": alpha.site_name}},
        headers=bearer(mint()),
    )
    assert created.status_code == 202
    data = await stack.wait(created.json()["id"])
    assert data["status"] == "completed", data
    tasks = {t["purger"]: t for t in data["tasks"]}
    assert {t["status"] for t in tasks.values()} == {"succeeded"}
    assert tasks["postgres"]["retained"]["billing_invoices"]["count"] == 1
    assert tasks["mongodb"]["deleted"] == {"instagram_messages": 6, "instagram_comments": 6}
    assert tasks["s3"]["deleted"] == {MEDIA: 8, CACHE: 6}  # 3 keys x 2, 1 version + 1 marker

    after = await stack.snapshots()
    leftovers = _mentions(after, needles)
    assert leftovers == {}, leftovers
    # Nothing else changed (the retained invoice row changed: its tenant link is gone).
    others_before, others_after = _without(before, needles), _without(after, needles)
    others_after["postgres"]["billing_invoices"] = [
        r for r in others_after["postgres"]["billing_invoices"] if alpha.site_name not in r
    ]
    for store, tables in others_before.items():
        for name, rows in tables.items():
            assert others_after[store][name] == rows, f"{store}.{name} changed"

    # Meta: webhooks and permissions gone for both accounts, with the right tokens,
    # before the PostgreSQL step deleted those tokens.
    fb, ig = alpha.accounts
    assert not stack.graph.subscribed("facebook", fb.facebook_page_id or "")
    assert not stack.graph.granted("facebook", fb.facebook_user_id or "")
    assert not stack.graph.subscribed("instagram", ig.ig_user_id)
    deletes = [
        (c.family, c.path.split("/", 2)[-1], c.token)
        for c in stack.graph.calls
        if c.method == "DELETE"
    ]
    expected = [
        ("facebook", f"{fb.facebook_page_id}/subscribed_apps", fb.page_token),
        ("facebook", f"{fb.facebook_user_id}/permissions", fb.user_token),
        ("instagram", f"{ig.ig_user_id}/subscribed_apps", ig.user_token),
        ("instagram", "me/permissions", ig.user_token),
    ]
    # Accounts in any order; per account, unsubscribe before revoke.
    assert sorted(deletes, key=str) == sorted(expected, key=str)
    for family in ("facebook", "instagram"):
        edges = [path.rsplit("/", 1)[-1] for fam, path, _ in deletes if fam == family]
        assert edges == ["subscribed_apps", "permissions"]
    assert stack.graph.subscribed(
        "facebook", stack.world.tenants["bravo"].accounts[0].facebook_page_id or ""
    )
    events = await stack.events(data["id"])
    assert _before(events, ("task_succeeded", "meta_graph"), ("task_started", "postgres"))
    assert "Completed" in await _status_page(stack, data)

    # Confirmations went out although the account is gone: the owner's address was read
    # before; then the tracking store keeps no identifier, yet finds the request by one.
    await stack.minimised(data["id"])
    (delivery,) = stack.receiver.deliveries
    assert json.loads(delivery.body)["request_id"] == data["id"]
    ((_, recipients, _),) = stack.smtp.messages
    assert recipients == [alpha.owner_email]
    dump = await stack.tracking_dump()
    for identifier in stack.world.identifiers():
        assert identifier not in dump, "the tracking store keeps an identifier"
    for lookup in (
        f"site_name={alpha.site_name}",
        f"tenant_id={alpha.id}",
        f"ig_user_id={alpha.accounts[1].ig_user_id}",
    ):
        found = await stack.client.get(URL, params={"subject": lookup}, headers=bearer(mint()))
        assert [i["id"] for i in found.json()["items"]] == [data["id"]], lookup

    logs = capfd.readouterr()
    for identifier in stack.world.identifiers():
        assert identifier not in logs.out + logs.err, "a log line names the subject"
    # ...while every task's log lines name the request and the store.
    assert f'"deletion_request_id": "{data["id"]}"' in logs.err
    assert '"purger": "mongodb"' in logs.err


async def test_meta_data_callback_end_to_end(
    stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    alpha = stack.world.tenants["alpha"]
    fb, ig = alpha.accounts
    before = await stack.snapshots()
    value = sign(
        {"algorithm": "HMAC-SHA256", "user_id": fb.facebook_user_id, "issued_at": int(time.time())},
        FB_SECRET.encode(),
    )
    answer = await stack.client.post("/meta/data-deletion", data={"signed_request": value})
    assert answer.status_code == 200
    code = answer.json()["confirmation_code"]
    listing = (await stack.client.get(URL, headers=bearer(mint()))).json()["items"]
    (request,) = [r for r in listing if r["confirmation_code"] == code]
    data = await stack.wait(request["id"])
    assert data["status"] == "completed", data

    after = await stack.snapshots()
    needles = [str(fb.id), fb.ig_user_id]
    assert _mentions(after, needles) == {}
    # The tenant, its other account and all of bravo's and charlie's data are untouched.
    assert _without(after, needles)["mongodb"] == _without(before, needles)["mongodb"]
    assert _without(after, needles)["s3"] == _without(before, needles)["s3"]
    for table in ("tenants", "contacts", "users", "billing_invoices", "campaigns"):
        assert after["postgres"][table] == before["postgres"][table]
    assert any(str(ig.id) in row for row in after["postgres"]["instagram_accounts"])
    assert [c.edge for c in stack.graph.calls if c.method == "DELETE"] == [
        "subscribed_apps",
        "permissions",
    ]
    text = await _status_page(stack, data)
    assert "Completed" in text and "Deletion of data received from Facebook or Instagram" in text
    logs = capfd.readouterr()
    for identifier in stack.world.identifiers():
        assert identifier not in logs.out + logs.err


async def test_instagram_disconnect_end_to_end(stack: Stack) -> None:
    bravo = stack.world.tenants["bravo"]
    (account,) = bravo.accounts
    before = await stack.snapshots()
    created = await stack.client.post(
        URL,
        json={
            "kind": "instagram_disconnect",
            "subject": {"tenant_id": str(bravo.id), "instagram_account_id": str(account.id)},
        },
        headers=bearer(mint()),
    )
    data = await stack.wait(created.json()["id"])
    assert data["status"] == "completed", data
    after = await stack.snapshots()
    # Messages and comments of the account are gone; its cached media stays (30-day rule).
    assert _mentions({"mongodb": after["mongodb"]}, [str(account.id)]) == {}
    assert after["s3"] == before["s3"]
    (row,) = [r for r in after["postgres"]["instagram_accounts"] if str(account.id) in r]
    assert '"access_token_encrypted": null' in row and '"status": "disconnected"' in row
    assert not stack.graph.subscribed("facebook", account.facebook_page_id or "")
    assert not stack.graph.granted("facebook", account.facebook_user_id or "")
    assert after["postgres"]["tenants"] == before["postgres"]["tenants"]


SHARED = pytest.mark.parametrize("world", ["shared_instagram"], indirect=True)


async def _file(stack: Stack, kind: str, subject: dict[str, str]) -> dict[str, Any]:
    created = await stack.client.post(
        URL, json={"kind": kind, "subject": subject}, headers=bearer(mint())
    )
    assert created.status_code == 202, created.text
    data = await stack.wait(created.json()["id"])
    assert data["status"] == "completed", data
    assert {t["status"] for t in data["tasks"]} == {"succeeded"}
    return data


def _delta(stack: Stack) -> list[str]:
    delta = stack.world.tenants["delta"]
    return [str(delta.id), str(delta.accounts[0].id)]


@SHARED
async def test_a_persons_meta_request_leaves_another_tenants_connection_end_to_end(
    stack: Stack,
) -> None:
    """alpha's and delta's connections of one Instagram account; alpha's person asks."""
    alpha = stack.world.tenants["alpha"].accounts[0]
    cache = f"instagram/{alpha.ig_user_id}/"
    before = await stack.snapshots()
    assert len(mentioning(before, _delta(stack))["mongodb"]["instagram_messages"]) == 3

    data = await _file(stack, "meta_data", {"facebook_user_id": alpha.facebook_user_id or ""})

    after = await stack.snapshots()
    assert mentioning(after, _delta(stack)) == mentioning(before, _delta(stack))
    assert mentioning(after, [cache]) == mentioning(before, [cache])
    assert mentioning(after, [str(alpha.id)]) == {}
    tasks = {t["purger"]: t for t in data["tasks"]}
    assert tasks["mongodb"]["deleted"] == {"instagram_messages": 3, "instagram_comments": 3}
    assert tasks["s3"]["deleted"] == {CACHE: 0}
    kept = tasks["s3"]["retained"][CACHE]
    assert kept["count"] == 3 and "another SoundOps connection" in kept["reason"]
    # The person says what was kept and why, on the public status page.
    assert "shared with another SoundOps connection" in await _status_page(stack, data)
    delta = stack.world.tenants["delta"].accounts[0]
    assert stack.graph.granted("facebook", delta.facebook_user_id or "")
    assert stack.graph.subscribed("facebook", delta.facebook_page_id or "")


@SHARED
async def test_a_request_by_the_instagram_account_reaches_every_tenants_connection_end_to_end(
    stack: Stack,
) -> None:
    alpha = stack.world.tenants["alpha"].accounts[0]
    before = await stack.snapshots()

    data = await _file(stack, "meta_data", {"ig_username": alpha.ig_username})

    after = await stack.snapshots()
    reached = [str(alpha.id), _delta(stack)[1], alpha.ig_user_id]
    assert mentioning(after, reached) == {}
    assert len(mentioning(before, reached)["s3"][CACHE]) == 3
    tasks = {t["purger"]: t for t in data["tasks"]}
    assert tasks["mongodb"]["deleted"] == {"instagram_messages": 6, "instagram_comments": 6}
    assert tasks["s3"]["deleted"] == {CACHE: 3} and tasks["s3"]["retained"] == {}
    for name in ("alpha", "delta"):  # the tenants themselves stay
        site = stack.world.tenants[name].site_name
        assert any(site in row for row in after["postgres"]["tenants"])


@SHARED
async def test_account_deletion_leaves_another_tenants_connection_end_to_end(
    stack: Stack,
) -> None:
    alpha = stack.world.tenants["alpha"]
    cache = f"instagram/{alpha.accounts[0].ig_user_id}/"
    before = await stack.snapshots()

    data = await _file(stack, "account", {"site_name": alpha.site_name})

    after = await stack.snapshots()
    assert mentioning(after, _delta(stack)) == mentioning(before, _delta(stack))
    assert mentioning(after, [cache]) == mentioning(before, [cache])
    assert mentioning(after, [str(alpha.id), *(str(a.id) for a in alpha.accounts)]) == {}
    tasks = {t["purger"]: t for t in data["tasks"]}
    assert tasks["s3"]["deleted"] == {MEDIA: 8, CACHE: 3}
    assert tasks["s3"]["retained"][CACHE]["count"] == 3


async def test_preview_matches_what_the_request_then_deletes(stack: Stack) -> None:
    alpha = stack.world.tenants["alpha"]
    body = {"kind": "account", "subject": {"owner_email": alpha.owner_email}}
    before = await stack.snapshots()
    preview = await stack.client.post(f"{URL}/preview", json=body, headers=bearer(mint()))
    assert preview.status_code == 200, preview.text
    assert await stack.snapshots() == before, "preview changed something"
    assert stack.graph.calls == []
    would = {t["purger"]: t for t in preview.json()["tasks"]}
    created = await stack.client.post(URL, json=body, headers=bearer(mint()))
    data = await stack.wait(created.json()["id"])
    for task in data["tasks"]:
        if task["purger"] == "meta_graph":
            continue
        assert task["deleted"] == would[task["purger"]]["would_delete"], task["purger"]
        assert task["retained"] == would[task["purger"]]["would_retain"]


async def test_a_fans_request_deletes_what_they_wrote_counted_apart_end_to_end(
    stack: Stack,
) -> None:
    """A fan who was never a customer asks by username: what they wrote in every tenant is
    deleted, and the preview, the task, the receipt and the status page count it apart."""
    body = {"kind": "meta_data", "subject": {"ig_username": "fan0"}}
    before = await stack.snapshots()
    written = [d for d in before["mongodb"]["instagram_comments"] if '"from_username": "fan0"' in d]
    assert len(written) >= 3
    expected = {
        "instagram_messages": 0,
        "instagram_comments": 0,
        "instagram_comments.as_third_party": len(written),
    }
    preview = await stack.client.post(f"{URL}/preview", json=body, headers=bearer(mint()))
    assert preview.status_code == 200, preview.text
    would = {t["purger"]: t for t in preview.json()["tasks"]}
    assert would["mongodb"]["would_delete"] == expected
    assert would["mongodb"]["as_third_party"] == {"instagram_comments": len(written)}

    created = await stack.client.post(URL, json=body, headers=bearer(mint()))
    data = await stack.wait(created.json()["id"])

    assert data["status"] == "completed", data
    (mongo,) = [t for t in data["tasks"] if t["purger"] == "mongodb"]
    assert mongo["deleted"] == expected
    assert mongo["as_third_party"] == {"instagram_comments": len(written)}
    after = await stack.snapshots()
    assert after["mongodb"]["instagram_comments"] == [
        d for d in before["mongodb"]["instagram_comments"] if d not in written
    ]
    assert after["mongodb"]["instagram_messages"] == before["mongodb"]["instagram_messages"]
    assert after["postgres"] == before["postgres"]
    receipt = await stack.client.get(f"{URL}/{data['id']}/receipt", headers=bearer(mint()))
    assert receipt.status_code == 200, receipt.text
    (stored,) = [s for s in receipt.json()["receipt"]["stores"] if s["store"] == "mongodb"]
    assert stored["as_third_party"] == {"instagram_comments": len(written)}
    page = await stack.client.get(
        f"/deletion-status/{data['confirmation_code']}", headers={"Accept": "application/json"}
    )
    (shown,) = [s for s in page.json()["stores"] if s["store"] == "mongodb"]
    assert shown["as_third_party"] == {"instagram_comments": len(written)}
    html = await _status_page(stack, data)
    assert f"of which {len(written)} item(s) you wrote to other accounts" in html


async def test_failures_and_retries_log_no_personal_data_and_move_the_metrics(
    stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    """A disconnect that meets a rate limit once, and a meta_data request that fails for good."""
    bravo = stack.world.tenants["bravo"]
    (bravo_account,) = bravo.accounts
    alpha_ig = stack.world.tenants["alpha"].accounts[1]
    stack.graph.script("DELETE", "/fb/v25.0/*/subscribed_apps", graph_error(613))
    stack.graph.script("DELETE", "/ig/v25.0/*/subscribed_apps", graph_error(3))
    before = (await stack.client.get("/metrics")).text
    disconnect = await stack.client.post(
        URL,
        json={
            "kind": "instagram_disconnect",
            "subject": {"tenant_id": str(bravo.id), "instagram_account_id": str(bravo_account.id)},
        },
        headers=bearer(mint()),
    )
    meta = await stack.client.post(
        URL,
        json={"kind": "meta_data", "subject": {"ig_username": alpha_ig.ig_username}},
        headers=bearer(mint()),
    )
    done = await stack.wait(disconnect.json()["id"])
    failed = await stack.wait(meta.json()["id"])
    assert done["status"] == "completed"
    (graph_task,) = [t for t in done["tasks"] if t["purger"] == "meta_graph"]
    assert graph_task["attempts"] == 2
    assert failed["status"] == "failed"
    (broken,) = [t for t in failed["tasks"] if t["purger"] == "meta_graph"]
    assert broken["error"].startswith("Graph API unsubscribe: error 3/")
    # The tokens stayed for an operator's retry: the PostgreSQL step did not run.
    assert [t["status"] for t in failed["tasks"] if t["purger"] == "postgres"] == ["pending"]

    after = (await stack.client.get("/metrics")).text
    assert (
        _sample(after, 'deletion_task_retries_total{purger="meta_graph"}')
        >= _sample(before, 'deletion_task_retries_total{purger="meta_graph"}') + 1
    )
    assert _sample(after, 'deletion_tasks_total{outcome="failed",purger="meta_graph"}') >= 1
    logs = capfd.readouterr()
    for identifier in stack.world.identifiers():
        assert identifier not in logs.out + logs.err, "a log line names the subject"
    assert "task_retrying" in logs.err and "task_failed" in logs.err


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _request_mail(sender: str, site_name: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"Owner <{sender}>"
    message["To"] = "privacy@soundops.example"
    message["Subject"] = "Account Deletion Request"
    message["Message-ID"] = f"<{uuid.uuid4().hex}@mail.example>"
    message["Date"] = "Sun, 29 Nov 2026 10:00:00 +0000"
    message.set_content(f"Hello,\n\nplease delete my account {site_name}.\n\nThanks\n")
    return message.as_bytes()


def _link(message: Any) -> str:
    parsed = message_from_bytes(message.as_bytes(), policy=email_policy.default)
    body = parsed.get_body(("plain",))
    assert body is not None
    text = str(body.get_content())
    (link,) = [w for w in text.split() if "/deletion-confirm/" in w]
    return link


async def test_account_deletion_requested_by_email_over_imap(
    stack: Stack, dovecot_server: Any
) -> None:
    alpha = stack.world.tenants["alpha"]
    needles = await owned_ids(stack.pg_dsn, alpha.id) + [a.ig_user_id for a in alpha.accounts]
    dovecot_server.reset("privacy")
    settings = stack.state.settings.model_copy(
        update={"imap_url": SecretStr(dovecot_server.url("privacy"))}
    )
    poller = MailboxPoller(settings, stack.state.inbound)
    before = await stack.snapshots()

    dovecot_server.append(_request_mail(alpha.owner_email, alpha.site_name), user="privacy")
    report = await poller.poll_once()
    assert dict(report.outcomes) == {"awaiting_confirmation": 1} and report.moved == 1
    assert dovecot_server.list_messages("INBOX", user="privacy") == []
    assert len(dovecot_server.list_messages("Processed", user="privacy")) == 1

    # The one-time link went to the owner's address on file.
    (mail,) = [(rcpts, m) for _, rcpts, m in stack.smtp.messages]
    assert mail[0] == [alpha.owner_email]
    path = "/" + _link(mail[1]).split("/", 3)[3]
    listed = (await stack.client.get(URL, headers=bearer(mint()))).json()["items"]
    (request,) = listed
    assert request["status"] == "awaiting_confirmation" and request["source"] == "email"

    # Opening the page (as a mail scanner would) changes nothing and deletes nothing.
    for _ in range(2):
        page = await stack.client.get(path)
        assert page.status_code == 200 and "<form" in page.text
    await asyncio.sleep(0.3)  # a worker that wrongly picked it up would have started
    assert (await stack.wait_status(request["id"])) == "awaiting_confirmation"
    assert await stack.snapshots() == before

    confirmed = await stack.client.post(path)
    assert confirmed.status_code == 303
    data = await stack.wait(request["id"])
    assert data["status"] == "completed", data
    assert {t["status"] for t in data["tasks"]} == {"succeeded"}
    assert _mentions(await stack.snapshots(), needles) == {}
    # A used link says so and changes nothing.
    used = await stack.client.post(path)
    assert used.status_code == 410

    # Polling again files nothing.
    again = await poller.poll_once()
    assert dict(again.outcomes) == {} and again.moved == 0
    assert len((await stack.client.get(URL, headers=bearer(mint()))).json()["items"]) == 1


async def test_a_forged_email_never_captures_the_backends_deletion(stack: Stack) -> None:
    """A stranger's e-mail for a site files a request in review; the backend's REST request
    for the same site is a request of its own, and rejecting the spam leaves it running."""
    alpha = stack.world.tenants["alpha"]
    needles = await owned_ids(stack.pg_dsn, alpha.id) + [a.ig_user_id for a in alpha.accounts]
    forged = await stack.client.post(
        "/v1/inbound-email",
        content=_request_mail("someone.else@elsewhere.example", alpha.site_name),
        headers={"Content-Type": "message/rfc822", **bearer(mint(("deletions:write",)))},
    )
    assert forged.status_code == 202, forged.text
    assert forged.json()["outcome"] == "needs_review"
    spam_id = forged.json()["request_id"]
    spam = (await stack.client.get(f"{URL}/{spam_id}", headers=bearer(mint()))).json()
    assert spam["status"] == "needs_review" and spam["review_reason"] == "sender_not_on_file"

    rest = await stack.client.post(
        URL,
        json={"kind": "account", "subject": {"tenant_id": str(alpha.id)}},
        headers=bearer(mint()),
    )
    assert rest.status_code == 202, rest.text  # a new request, not the one in review
    rest_id = rest.json()["id"]
    assert rest_id != spam_id and rest.json()["source"] == "api"
    # Asked again, the backend gets its own request back, never the unverified one.
    again = await stack.client.post(
        URL,
        json={"kind": "account", "subject": {"tenant_id": str(alpha.id)}},
        headers=bearer(mint()),
    )
    assert again.status_code == 200 and again.json()["id"] == rest_id

    rejected = await stack.client.post(
        f"{URL}/{spam_id}/reject", json={"reason": "spam"}, headers=bearer(mint())
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "cancelled"
    assert await stack.wait_status(rest_id) != "cancelled"

    data = await stack.wait(rest_id)
    assert data["status"] == "completed", data
    assert {t["status"] for t in data["tasks"]} == {"succeeded"}
    assert _mentions(await stack.snapshots(), needles) == {}
    assert await stack.wait_status(spam_id) == "cancelled"


# Meta down for good: every Graph call answers 503. The deadline is short, the retries fast.
META_DOWN = pytest.mark.parametrize(
    "extra_settings",
    [
        {
            "revoke_deadline": "4s",
            "retry_max_seconds": 0.2,
            "max_attempts": 2,
        }
    ],
)


def _meta_down(graph: FakeGraph) -> None:
    for method in ("DELETE", "GET"):
        graph.script(method, "*", *[http_error(503)] * 10_000)


async def _account_rows(stack: Stack, account_id: uuid.UUID) -> dict[str, Any]:
    conn = await asyncpg.connect(stack.pg_dsn)
    try:
        account = await conn.fetchrow(
            "SELECT status, access_token_encrypted, page_token_encrypted"
            " FROM instagram_accounts WHERE id = $1",
            account_id,
        )
        posts = await conn.fetch(
            "SELECT status FROM instagram_scheduled_posts WHERE instagram_account_id = $1",
            account_id,
        )
        rules = await conn.fetch(
            "SELECT enabled FROM automation_rules WHERE instagram_account_id = $1", account_id
        )
    finally:
        await conn.close()
    return {
        "status": account["status"],
        "tokens": [account["access_token_encrypted"], account["page_token_encrypted"]],
        "scheduled": sum(1 for r in posts if r["status"] == "scheduled"),
        "enabled_rules": sum(1 for r in rules if r["enabled"]),
    }


async def _task(stack: Stack, request_id: str, purger: str) -> dict[str, Any]:
    data = (await stack.client.get(f"{URL}/{request_id}", headers=bearer(mint()))).json()
    (task,) = [t for t in data["tasks"] if t["purger"] == purger]
    return dict(task)


@SHARED
@META_DOWN
async def test_a_disconnect_cuts_at_once_while_meta_is_down_and_destroys_tokens_at_deadline(
    stack: Stack,
) -> None:
    """Every Graph call fails: posts, automations and the status are cut in the first run;
    the tokens stay for the revoke until the deadline, then go; nobody claims Meta's side."""
    _meta_down(stack.graph)
    alpha = stack.world.tenants["alpha"]
    account = alpha.accounts[0]
    delta = stack.world.tenants["delta"].accounts[0]  # the same Instagram account elsewhere
    delta_before = await _account_rows(stack, delta.id)
    before = await _account_rows(stack, account.id)
    assert before["scheduled"] and before["enabled_rules"] and all(before["tokens"])
    created = await stack.client.post(
        URL,
        json={
            "kind": "instagram_disconnect",
            "subject": {"tenant_id": str(alpha.id), "instagram_account_id": str(account.id)},
        },
        headers=bearer(mint()),
    )
    request_id = created.json()["id"]

    # One worker run: the cut is done while the Meta step is retrying.
    give_up = time.monotonic() + 30  # before this change the cut waited for Meta: forever
    while (await _task(stack, request_id, "postgres"))["status"] != "succeeded":
        assert time.monotonic() < give_up, "the cut waits for Meta"
        await asyncio.sleep(0.05)
    graph_task = await _task(stack, request_id, "meta_graph")
    assert graph_task["status"] in ("running", "retrying"), graph_task
    assert (await stack.client.get(f"{URL}/{request_id}", headers=bearer(mint()))).json()[
        "status"
    ] == "running"
    cut = await _account_rows(stack, account.id)
    assert cut["status"] == "disconnected"
    assert cut["scheduled"] == 0 and cut["enabled_rules"] == 0
    assert all(cut["tokens"]), "the tokens are held for the revoke until the deadline"

    data = await stack.wait(request_id, timeout=60)
    assert data["status"] == "completed", data
    graph_task = {t["purger"]: t for t in data["tasks"]}["meta_graph"]
    assert graph_task["status"] == "skipped"
    assert graph_task["error"].startswith("revoke not confirmed by Meta before the deadline")
    assert graph_task["attempts"] > 2, "retried past max_attempts, until the deadline"
    assert (await _account_rows(stack, account.id))["tokens"] == [None, None]
    # The other tenant's connection of the same Instagram account is untouched.
    assert await _account_rows(stack, delta.id) == delta_before

    # Nobody is told Meta's side was deleted and verified.
    page = await _status_page(stack, data)
    assert "revoke not confirmed by Meta before the deadline" in page
    receipt = (await stack.client.get(f"{URL}/{request_id}/receipt", headers=bearer(mint()))).text
    assert "revoke not confirmed by Meta before the deadline" in receipt
    await stack.minimised(request_id)
    (delivery,) = stack.receiver.deliveries
    body = json.loads(delivery.body)
    (store,) = [s for s in body["stores"] if s["store"] == "meta_graph"]
    assert store["verified"] is False and store["skipped"] == "revoke_unconfirmed"
    assert "revoke not confirmed by Meta" in store["outcome"]
    assert "Meta did not confirm the revoke" in body["summary"]


@META_DOWN
async def test_a_deauthorize_cuts_at_once_while_meta_is_down_and_destroys_tokens_at_deadline(
    stack: Stack,
) -> None:
    """The person removed the app at Meta, and every Graph call fails: the signed callback
    cuts posts, automations and the status in the first run; the tokens stay (for the
    webhook removal) until the deadline, then go, and nobody claims Meta's side."""
    _meta_down(stack.graph)
    alpha, bravo = stack.world.tenants["alpha"], stack.world.tenants["bravo"]
    account, other = alpha.accounts
    unchanged = {a.id: await _account_rows(stack, a.id) for a in (other, *bravo.accounts)}
    before = await _account_rows(stack, account.id)
    assert before["scheduled"] and before["enabled_rules"] and all(before["tokens"])
    value = sign(
        {
            "algorithm": "HMAC-SHA256",
            "user_id": account.facebook_user_id,
            "issued_at": int(time.time()),
        },
        FB_SECRET.encode(),
    )
    answer = await stack.client.post("/meta/deauthorize", data={"signed_request": value})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"expanded": True, "disconnects": 1, "skipped_reconnected": 0}
    (filed,) = (await stack.client.get(URL, headers=bearer(mint()))).json()["items"]
    assert (filed["kind"], filed["source"]) == ("instagram_disconnect", "meta_callback")
    request_id = filed["id"]

    give_up = time.monotonic() + 30  # a cut that waited for Meta would wait forever
    while (await _task(stack, request_id, "postgres"))["status"] != "succeeded":
        assert time.monotonic() < give_up, "the cut waits for Meta"
        await asyncio.sleep(0.05)
    assert (await _task(stack, request_id, "meta_graph"))["status"] in ("running", "retrying")
    cut = await _account_rows(stack, account.id)
    assert (cut["status"], cut["scheduled"], cut["enabled_rules"]) == ("disconnected", 0, 0)
    assert all(cut["tokens"]), "the tokens are held for Meta until the deadline"

    data = await stack.wait(request_id, timeout=60)
    assert data["status"] == "completed", data
    graph_task = {t["purger"]: t for t in data["tasks"]}["meta_graph"]
    assert graph_task["status"] == "skipped"
    assert graph_task["error"].startswith("revoke not confirmed by Meta before the deadline")
    assert (await _account_rows(stack, account.id))["tokens"] == [None, None]
    for account_id, rows in unchanged.items():
        assert await _account_rows(stack, account_id) == rows
    # Meta removed the permissions itself: only the webhook subscription was tried.
    tried = {c.edge for c in stack.graph.calls if c.method == "DELETE"}
    assert tried == {"subscribed_apps"}, tried
    page = await _status_page(stack, data)
    assert "revoke not confirmed by Meta before the deadline" in page
    public = await stack.client.get(
        f"/deletion-status/{data['confirmation_code']}", headers={"Accept": "application/json"}
    )
    assert "Meta did not confirm the revoke" in public.json()["summary"]


@META_DOWN
async def test_a_disconnect_revokes_at_meta_before_destroying_the_tokens(stack: Stack) -> None:
    """Meta answers: the revoke is made with the tokens, then they are destroyed."""
    bravo = stack.world.tenants["bravo"]
    (account,) = bravo.accounts
    created = await stack.client.post(
        URL,
        json={
            "kind": "instagram_disconnect",
            "subject": {"tenant_id": str(bravo.id), "instagram_account_id": str(account.id)},
        },
        headers=bearer(mint()),
    )
    data = await stack.wait(created.json()["id"])
    assert data["status"] == "completed", data
    tasks = {t["purger"]: t for t in data["tasks"]}
    assert {t["status"] for t in tasks.values()} == {"succeeded"}
    assert tasks["meta_graph"]["deleted"]["access tokens destroyed"] == 1
    deletes = [
        (c.path.split("/", 2)[-1], c.token) for c in stack.graph.calls if c.method == "DELETE"
    ]
    assert (f"{account.facebook_user_id}/permissions", account.user_token) in deletes
    assert not stack.graph.granted("facebook", account.facebook_user_id or "")
    assert (await _account_rows(stack, account.id))["tokens"] == [None, None]
    assert "revoke not confirmed" not in await _status_page(stack, data)
