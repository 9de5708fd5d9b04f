"""Evidence without personal data: confirmations, minimisation, look-ups, receipts, deadlines."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from app.cli import cli
from app.models import Base, DeletionRequest, DeletionTask, utcnow
from app.repository import list_events
from app.services.evidence.notices import SIGNATURE_HEADER, verify_signature
from app.services.execution import email_targets
from app.state import AppState
from app.wiring import new_engine
from tests.engine_support import Script, new_script, run_until_settled
from testsupport.receivers import SmtpSink, WebhookReceiver

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"
WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789"
SITE = "evidence-band"
EMAIL = "Owner.Person@example.com"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.close()


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return new_script(tmp_path, default=["ok"])


@pytest.fixture
def settings_overrides(
    script: Script, receiver: WebhookReceiver, smtp: SmtpSink, request: pytest.FixtureRequest
) -> dict[str, Any]:
    marker = request.node.get_closest_marker("settings")
    return {
        "testing_purgers": script.path,
        "notify_webhook_url": receiver.url,
        "notify_webhook_secret": WEBHOOK_SECRET,
        "smtp_url": smtp.url,
        "retry_base_seconds": 0.05,
        "max_attempts": 3,
        "worker_poll_seconds": 0.05,
        **(marker.kwargs if marker else {}),
    }


async def file(client: httpx.AsyncClient, auth: Auth, **extra: Any) -> str:
    body = {"kind": "account", "subject": {"site_name": SITE}, "notify_email": EMAIL, **extra}
    response = await client.post(
        URL, json=body, headers={**auth(), "Idempotency-Key": "order-4711-owner.person@example.com"}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def until_minimised(state: AppState, request_id: str, timeout: float = 15) -> DeletionRequest:
    engine = new_engine(state)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        claim = await engine.claim()
        if claim is not None:
            await engine.run_claimed(claim.request_id)
        request = await state.requests.get(uuid.UUID(request_id))
        if request.minimised_at is not None:
            return request
        assert asyncio.get_running_loop().time() < deadline, request.status
        await asyncio.sleep(0.05)


async def dump_tracking_db(state: AppState) -> str:
    """Every row of every table of the tracking store, as text."""
    chunks = []
    async with state.tracking_db.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = (await conn.execute(sa.select(table))).all()
            chunks += [repr(tuple(row)) for row in rows]
    return "\n".join(chunks)


async def test_completion_confirms_then_keeps_evidence_only(
    client: httpx.AsyncClient,
    auth: Auth,
    state: AppState,
    receiver: WebhookReceiver,
    smtp: SmtpSink,
) -> None:
    request_id = await file(client, auth, reason="Asked by Owner Person on the phone")
    minimised = await until_minimised(state, request_id)
    assert minimised.status == "completed"

    # The webhook arrived once, signed.
    (delivery,) = receiver.deliveries
    assert verify_signature(
        WEBHOOK_SECRET.encode(), delivery.body, delivery.headers[SIGNATURE_HEADER]
    )
    assert not verify_signature(
        b"another-secret", delivery.body, delivery.headers[SIGNATURE_HEADER]
    )
    payload = json.loads(delivery.body)
    assert payload["request_id"] == request_id and payload["event"] == "deletion.completed"
    # The e-mail arrived at the address given, and names nobody.
    ((_, recipients, message),) = smtp.messages
    assert [r.lower() for r in recipients] == [EMAIL.lower()]
    assert message["Auto-Submitted"] == "auto-generated"
    assert "deletion-status/" in message.get_payload()
    for raw in (SITE, EMAIL, EMAIL.lower(), "Owner Person", "order-4711"):
        assert raw not in json.dumps(payload)

    # No raw identifier anywhere in the tracking store...
    dump = await dump_tracking_db(state)
    for raw in (SITE, EMAIL, EMAIL.lower(), "Owner Person", "order-4711-owner.person@example.com"):
        assert raw not in dump, raw
    # ...yet the request is found by its identifier.
    found = await client.get(URL, params={"subject": f"site_name=  {SITE} "}, headers=auth())
    assert [item["id"] for item in found.json()["items"]] == [request_id]
    missing = await client.get(URL, params={"subject": "site_name=other-band"}, headers=auth())
    assert missing.json()["items"] == []
    bad = await client.get(URL, params={"subject": "site_name"}, headers=auth())
    assert bad.status_code == 422
    async with state.sessionmaker() as session:
        types = [e.type for e in await list_events(session, uuid.UUID(request_id))]
    assert types[-3:] == ["webhook_sent", "email_sent", "minimised"]


async def test_idempotency_replay_still_works_after_minimisation(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    request_id = await file(client, auth)
    await until_minimised(state, request_id)
    replay = await client.post(
        URL,
        json={"kind": "account", "subject": {"site_name": SITE}, "notify_email": EMAIL},
        headers={**auth(), "Idempotency-Key": "order-4711-owner.person@example.com"},
    )
    assert replay.status_code == 200 and replay.json()["id"] == request_id


@pytest.mark.settings(max_attempts=2)
async def test_an_unreachable_webhook_is_retried_then_given_up(
    client: httpx.AsyncClient, auth: Auth, state: AppState, receiver: WebhookReceiver
) -> None:
    receiver.status = 503
    request_id = await file(client, auth)
    minimised = await until_minimised(state, request_id)
    assert minimised.status == "completed"
    assert minimised.webhook_status == "given_up" and minimised.email_status == "sent"
    assert receiver.attempts == 2
    async with state.sessionmaker() as session:
        events = await list_events(session, uuid.UUID(request_id))
    assert [e.type for e in events].count("confirmation_retrying") == 1
    given_up = [e for e in events if e.type == "webhook_given_up"]
    assert given_up and given_up[0].detail["error"] == "webhook answered HTTP 503"


async def test_a_cancelled_request_is_minimised_without_confirmations(
    client: httpx.AsyncClient,
    auth: Auth,
    state: AppState,
    receiver: WebhookReceiver,
    smtp: SmtpSink,
) -> None:
    request_id = await file(client, auth)
    await client.post(f"{URL}/{request_id}/cancel", headers=auth())
    minimised = await until_minimised(state, request_id)
    assert minimised.status == "cancelled" and minimised.notify_email is None
    assert receiver.attempts == 0 and smtp.messages == []
    assert SITE not in await dump_tracking_db(state)


async def test_receipt_verifies_and_any_tampering_breaks_it(
    client: httpx.AsyncClient, auth: Auth, state: AppState, tmp_path: Path
) -> None:
    request_id = await file(client, auth)
    open_receipt = await client.get(f"{URL}/{request_id}/receipt", headers=auth())
    assert open_receipt.status_code == 409
    await run_until_settled(state, [request_id])
    response = await client.get(f"{URL}/{request_id}/receipt", headers=auth("deletions:read"))
    assert response.status_code == 200
    document = response.json()
    receipt = document["receipt"]
    assert receipt["request_id"] == request_id and receipt["status"] == "completed"
    assert receipt["data_map_version"] == state.datamap.version
    assert {s["store"] for s in receipt["stores"]} == {"meta_graph", "postgres", "mongodb", "s3"}
    assert all(s["verified"] for s in receipt["stores"])
    assert SITE not in response.text and EMAIL.lower() not in response.text
    key = (await client.get("/v1/receipts/public-key", headers=auth())).json()
    assert key["algorithm"] == "Ed25519"

    path = tmp_path / "receipt.json"
    runner = CliRunner()

    async def verify(doc: dict[str, Any], *extra: str) -> int:
        path.write_text(json.dumps(doc))
        result = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["receipt", "verify", str(path), "--public-key", key["public_key"], *extra],
        )
        return result.exit_code

    assert await verify(document) == 0
    tampered_cases = [
        ("status", "failed"),
        ("kind", "meta_data"),
        ("completed_at", "2020-01-01T00:00:00+00:00"),
        ("data_map_version", "other"),
        ("backups", {"retention_days": 1, "expire_by": None, "statement": "soon"}),
    ]
    for field_name, value in tampered_cases:
        changed = json.loads(json.dumps(document))
        changed["receipt"][field_name] = value
        assert await verify(changed) == 1, field_name
    changed = json.loads(json.dumps(document))
    changed["receipt"]["stores"][0]["deleted"] = {"anything": 0}
    assert await verify(changed) == 1
    # Re-signed with another key (and that key embedded): still not trusted.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from app.services.evidence import receipts

    forged = receipts.sign(changed["receipt"], Ed25519PrivateKey.generate())
    assert await verify(forged) == 1


async def test_deadline_events_once_each(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    near = await file(client, auth)
    late_response = await client.post(
        URL, json={"kind": "account", "subject": {"site_name": "late-band"}}, headers=auth()
    )
    late = late_response.json()["id"]
    async with state.sessionmaker() as session:
        await session.execute(
            sa.update(DeletionRequest)
            .where(DeletionRequest.id == uuid.UUID(near))
            .values(due_at=utcnow() + timedelta(days=2))
        )
        await session.execute(
            sa.update(DeletionRequest)
            .where(DeletionRequest.id == uuid.UUID(late))
            .values(due_at=utcnow() - timedelta(hours=1))
        )
        await session.commit()
    engine = new_engine(state, "w")
    assert await engine.check_deadlines() == (2, 1)
    assert await engine.check_deadlines() == (0, 0)
    async with state.sessionmaker() as session:
        near_events = [e.type for e in await list_events(session, uuid.UUID(near))]
        late_events = [e.type for e in await list_events(session, uuid.UUID(late))]
    assert "deadline_near" in near_events and "overdue" not in near_events
    assert "deadline_near" in late_events and "overdue" in late_events
    overdue = await client.get(URL, params={"overdue": "true"}, headers=auth())
    assert [i["id"] for i in overdue.json()["items"]] == [late]


def test_the_completion_email_goes_to_every_address_on_file_once() -> None:
    by_email = DeletionRequest(confirm_recipients=["owner@on-file.example"], resolution={})
    assert email_targets(by_email) == ["owner@on-file.example"]
    every = DeletionRequest(
        notify_email="Asked@Example.com",
        confirm_recipients=["owner@on-file.example", " ASKED@example.com"],
        resolution={"owner_emails": ["resolved@example.com", "Owner@On-File.example"]},
    )
    assert email_targets(every) == [
        "Asked@Example.com",
        "owner@on-file.example",
        "resolved@example.com",
    ]
    assert email_targets(DeletionRequest(resolution={})) == []


async def set_addresses_on_file(state: AppState, request_id: str, **values: Any) -> None:
    """What intake and the resolver would have stored (the scripted resolver reads nothing)."""
    async with state.sessionmaker() as session:
        await session.execute(
            sa.update(DeletionRequest)
            .where(DeletionRequest.id == uuid.UUID(request_id))
            .values(**values)
        )
        await session.commit()


async def test_every_address_on_file_gets_its_own_completion_email_once(
    client: httpx.AsyncClient, auth: Auth, state: AppState, smtp: SmtpSink
) -> None:
    request_id = await file(client, auth)
    await set_addresses_on_file(
        state,
        request_id,
        confirm_recipients=["linked.owner@example.com"],
        resolution={"owner_emails": [EMAIL.upper(), "second.owner@example.com"]},
    )
    # One address's mailbox refuses at first: the others are not mailed again meanwhile.
    smtp.handler.refuse.add("second.owner@example.com")
    deadline = asyncio.get_running_loop().time() + 15
    engine = new_engine(state)
    while True:
        claim = await engine.claim()
        if claim is not None:
            await engine.run_claimed(claim.request_id)
        request = await state.requests.get(uuid.UUID(request_id))
        if request.notify_attempts >= 1:
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert request.email_status == "pending" and request.minimised_at is None
    smtp.handler.refuse.clear()
    minimised = await until_minimised(state, request_id)
    assert minimised.email_status == "sent"
    recipients = sorted(r.lower() for _, rcpts, _ in smtp.messages for r in rcpts)
    assert recipients == sorted(
        [EMAIL.lower(), "linked.owner@example.com", "second.owner@example.com"]
    )
    assert all(len(rcpts) == 1 for _, rcpts, _ in smtp.messages)  # none sees another's
    for _, rcpts, message in smtp.messages:
        assert message["To"].lower() == rcpts[0].lower()
    async with state.sessionmaker() as session:
        events = await list_events(session, uuid.UUID(request_id))
    (sent,) = [e for e in events if e.type == "email_sent"]
    assert sent.detail["recipients"] == 3
    dump = await dump_tracking_db(state)
    for raw in ("linked.owner@example.com", "second.owner@example.com", EMAIL.lower()):
        assert raw not in dump.lower()


# --- completion under the claim that ran the request; receipts made once, stored --------


async def test_a_completed_request_is_confirmed_and_minimised_by_the_claim_that_ran_it(
    client: httpx.AsyncClient, auth: Auth, state: AppState, receiver: WebhookReceiver
) -> None:
    request_id = await file(client, auth)
    await until_minimised(state, request_id)
    async with state.sessionmaker() as session:
        events = await list_events(session, uuid.UUID(request_id))
    kinds = [e.type for e in events]
    assert kinds.count("claimed") == 1, kinds
    after = events[kinds.index("completed") :]
    assert [e.type for e in after] == ["completed", "webhook_sent", "email_sent", "minimised"]
    assert len({e.actor for e in after}) == 1
    assert receiver.attempts == 1


@pytest.mark.settings(max_attempts=2)
async def test_a_confirmation_that_failed_is_retried_by_a_later_claim(
    client: httpx.AsyncClient, auth: Auth, state: AppState, receiver: WebhookReceiver
) -> None:
    receiver.status = 503
    request_id = await file(client, auth)
    await until_minimised(state, request_id)
    async with state.sessionmaker() as session:
        kinds = [e.type for e in await list_events(session, uuid.UUID(request_id))]
    after = kinds[kinds.index("completed") :]
    # The claim that ran it tried once; a later claim tried again, gave up, minimised.
    assert kinds.count("claimed") == 2, kinds
    assert after.index("confirmation_retrying") < after.index("claimed"), after
    assert after[-2:] == ["webhook_given_up", "minimised"], after


async def stored_receipt(state: AppState, request_id: str) -> dict[str, Any] | None:
    async with state.sessionmaker() as session:
        request = await session.get(DeletionRequest, uuid.UUID(request_id))
        assert request is not None
        return request.receipt


@pytest.mark.settings(max_attempts=50, retry_base_seconds=60)
async def test_the_receipt_is_made_when_the_request_completes_and_returned_as_issued(
    client: httpx.AsyncClient, auth: Auth, state: AppState, receiver: WebhookReceiver
) -> None:
    receiver.status = 503  # the confirmations wait: the request stays completed, unminimised
    request_id = await file(client, auth)
    assert await stored_receipt(state, request_id) is None
    assert await run_until_settled(state, [request_id]) == {request_id: "completed"}
    stored = await stored_receipt(state, request_id)
    assert stored is not None
    assert stored["receipt"]["status"] == "completed"
    assert stored["receipt"]["subject_minimised"] is False
    assert {s["store"] for s in stored["receipt"]["stores"]} == {
        "meta_graph",
        "postgres",
        "mongodb",
        "s3",
    }
    key = (await client.get("/v1/receipts/public-key", headers=auth())).json()["public_key"]
    from app.services.evidence import receipts

    assert receipts.verify(stored, key)

    first = await client.get(f"{URL}/{request_id}/receipt", headers=auth())
    # What the receipt states changes in the tracking store: the GET still says what was
    # signed when the request completed.
    async with state.sessionmaker() as session:
        await session.execute(
            sa.update(DeletionTask)
            .where(DeletionTask.request_id == uuid.UUID(request_id))
            .values(deleted={"rows": 999})
        )
        await session.commit()
    second = await client.get(f"{URL}/{request_id}/receipt", headers=auth())
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first.json() == stored


async def test_the_receipt_is_made_anew_when_the_request_is_minimised_and_then_kept(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    request_id = await file(client, auth)
    await until_minimised(state, request_id)
    stored = await stored_receipt(state, request_id)
    assert stored is not None and stored["receipt"]["subject_minimised"] is True
    first = await client.get(f"{URL}/{request_id}/receipt", headers=auth())
    await asyncio.sleep(0.01)  # a receipt made again would carry a later issued_at
    second = await client.get(f"{URL}/{request_id}/receipt", headers=auth())
    assert first.content == second.content and first.json() == stored
    # Counts and facts only: nothing of the subject in it.
    text = json.dumps(stored)
    assert SITE not in text and EMAIL.lower() not in text.lower()


async def test_a_failed_request_has_its_receipt_and_a_retry_to_completion_a_new_one(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    script.write(purgers={"s3": {"default": ["permanent"]}})
    request_id = await file(client, auth)
    assert await run_until_settled(state, [request_id]) == {request_id: "failed"}
    failed = await stored_receipt(state, request_id)
    assert failed is not None and failed["receipt"]["status"] == "failed"
    answer = await client.get(f"{URL}/{request_id}/receipt", headers=auth())
    assert answer.json() == failed

    script.write(default=["ok"])
    retried = await client.post(f"{URL}/{request_id}/retry", headers=auth("deletions:admin"))
    assert retried.status_code == 200
    assert await stored_receipt(state, request_id) is None
    assert (await client.get(f"{URL}/{request_id}/receipt", headers=auth())).status_code == 409
    await until_minimised(state, request_id)
    completed = await stored_receipt(state, request_id)
    assert completed is not None and completed["receipt"]["status"] == "completed"
    answer = await client.get(f"{URL}/{request_id}/receipt", headers=auth())
    assert answer.json() == completed


# --- backup horizon; receipts anyone can verify (issue 16, item 6) -----------------------


async def status_page_of(client: httpx.AsyncClient, auth: Auth, request_id: str) -> Any:
    code = (await client.get(f"{URL}/{request_id}", headers=auth())).json()["confirmation_code"]
    as_json = await client.get(f"/deletion-status/{code}", headers={"Accept": "application/json"})
    as_html = await client.get(f"/deletion-status/{code}")
    assert as_json.status_code == as_html.status_code == 200
    return as_json.json(), as_html.text


@pytest.mark.settings(backup_retention_days=35)
async def test_receipt_and_status_page_state_when_backup_copies_expire(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    request_id = await file(client, auth)
    page, text = await status_page_of(client, auth, request_id)
    assert page["backups"] == {
        "retention_days": 35,
        "expire_by": None,
        "statement": "Backup copies expire 35 days after the deletion completes.",
    }
    assert "Backup copies expire 35 days after the deletion completes." in text

    await run_until_settled(state, [request_id])
    receipt = (await client.get(f"{URL}/{request_id}/receipt", headers=auth())).json()["receipt"]
    completed_at = datetime.fromisoformat(receipt["completed_at"])
    expire_by = completed_at + timedelta(days=35)
    assert receipt["backups"]["retention_days"] == 35
    assert datetime.fromisoformat(receipt["backups"]["expire_by"]) == expire_by
    assert receipt["backups"]["statement"] == (
        f"Backup copies of the deleted data expire by {expire_by:%d %B %Y, %H:%M} UTC."
    )
    page, text = await status_page_of(client, auth, request_id)
    assert datetime.fromisoformat(page["backups"]["expire_by"]) == expire_by
    assert page["backups"]["statement"] == receipt["backups"]["statement"]
    assert f"{expire_by:%d %B %Y, %H:%M} UTC" in text
    assert SITE not in text and EMAIL.lower() not in text.lower()


async def test_without_a_backup_retention_receipts_say_backups_are_outside_this_service(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    request_id = await file(client, auth)
    await run_until_settled(state, [request_id])
    receipt = (await client.get(f"{URL}/{request_id}/receipt", headers=auth())).json()["receipt"]
    outside = "Backups of SoundOps' stores are outside this service"
    assert receipt["backups"]["retention_days"] is None
    assert receipt["backups"]["expire_by"] is None
    assert receipt["backups"]["statement"].startswith(outside)
    page, text = await status_page_of(client, auth, request_id)
    assert page["backups"] == receipt["backups"]
    assert outside in text.replace("&#x27;", "'")


def jcs(value: Any) -> str:
    """RFC 8785 for the value types of a receipt (strings, integers, booleans, null, arrays,
    objects), written here apart from the ``rfc8785`` package the service signs with: keys
    ordered by their UTF-16 code units, strings escaped as JSON.stringify does."""
    if isinstance(value, dict):
        ordered = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(f"{jcs(k)}:{jcs(value[k])}" for k in ordered) + "}"
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(type(value).__name__)


def nacl_verifies(document: dict[str, Any], public_key_b64: str) -> bool:
    """PyNaCl (libsodium), not ``cryptography``, over independently canonicalised bytes."""
    import base64

    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    key = VerifyKey(base64.b64decode(public_key_b64))
    try:
        key.verify(
            jcs(document["receipt"]).encode(), base64.b64decode(document["signature"]["value"])
        )
    except BadSignatureError:
        return False
    return True


async def test_a_receipt_verifies_with_another_ed25519_over_rfc8785_bytes(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    import rfc8785

    request_id = await file(client, auth)
    await run_until_settled(state, [request_id])
    document = (await client.get(f"{URL}/{request_id}/receipt", headers=auth())).json()
    assert document["signature"]["canonicalization"] == "RFC8785"
    assert jcs(document["receipt"]).encode() == rfc8785.dumps(document["receipt"])
    key = (await client.get("/v1/receipts/public-key", headers=auth())).json()["public_key"]
    assert nacl_verifies(document, key)
    for path, value in [
        (("status",), "failed"),
        (("backups", "retention_days"), 3650),
        (("stores", 0, "verified"), False),
    ]:
        changed = json.loads(json.dumps(document))
        target = changed["receipt"]
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        assert not nacl_verifies(changed, key), path


def test_receipts_are_signed_over_rfc8785_where_sorted_json_dumps_differs() -> None:
    """Keys outside the Basic Multilingual Plane sort by UTF-16 in RFC 8785, by code point
    in ``json.dumps(sort_keys=True)``: only RFC 8785 bytes verify in another language."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from app.services.evidence import receipts

    key = Ed25519PrivateKey.generate()
    receipt = {"deleted": {"\ue000": 1, "\U0001f600": 2}, "status": "completed"}
    document = receipts.sign(receipt, key)
    public = receipts.public_key_b64(key.public_key())
    assert jcs(receipt) == '{"deleted":{"\U0001f600":2,"\ue000":1},"status":"completed"}'
    assert nacl_verifies(document, public)
    assert receipts.verify(document, public)
    changed = json.loads(json.dumps(document))
    changed["receipt"]["deleted"]["\ue000"] = 0
    assert not receipts.verify(changed, public) and not nacl_verifies(changed, public)
    changed = json.loads(json.dumps(document))
    changed["signature"]["canonicalization"] = "something-else"
    assert not receipts.verify(changed, public)


def test_a_receipt_stored_before_rfc8785_still_verifies() -> None:
    """Stored receipts without ``canonicalization`` were signed over sorted ``json.dumps``."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from app.services.evidence import receipts

    key = Ed25519PrivateKey.generate()
    public = receipts.public_key_b64(key.public_key())
    receipt = {"deleted": {"\ue000": 1, "\U0001f600": 2}, "status": "completed"}
    legacy = json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    signature = base64.b64encode(key.sign(legacy.encode())).decode()
    old: dict[str, Any] = {
        "receipt": receipt,
        "signature": {"algorithm": "Ed25519", "value": signature},
    }
    assert receipts.verify(old, public)
    old["receipt"]["status"] = "failed"
    assert not receipts.verify(old, public)


async def test_the_readmes_node_snippet_verifies_a_receipt(
    client: httpx.AsyncClient, auth: Auth, state: AppState, tmp_path: Path
) -> None:
    """The README's verification in another language (Node.js, its own crypto), run as is."""
    import shutil
    import subprocess

    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("```js\n// verify-receipt.mjs\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "verify-receipt.mjs"
    script.write_text(snippet, encoding="utf-8")
    node = shutil.which("node")
    assert node is not None, "Node.js runs the README's verification"

    request_id = await file(client, auth)
    await run_until_settled(state, [request_id])
    document = (await client.get(f"{URL}/{request_id}/receipt", headers=auth())).json()
    key = (await client.get("/v1/receipts/public-key", headers=auth())).json()["public_key"]

    def node_says(doc: dict[str, Any]) -> tuple[int, str]:
        path = tmp_path / "receipt.json"
        path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        done = subprocess.run(
            [node, str(script), str(path), key], capture_output=True, text=True, check=False
        )
        return done.returncode, done.stdout.strip()

    assert await asyncio.to_thread(node_says, document) == (0, "valid")
    changed = json.loads(json.dumps(document))
    changed["receipt"]["stores"][0]["deleted"] = {"rows": 0}
    assert await asyncio.to_thread(node_says, changed) == (1, "INVALID")
