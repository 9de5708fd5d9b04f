"""Requests by e-mail: filed once per Message-ID, confirmed only from the link's POST,
expired, reviewed; never run before that; the link mailed to the address on file."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from app import repository
from app.errors import Conflict, NotFound, Unprocessable
from app.models import DeletionRequest, utcnow
from app.pii import keyed_hash
from app.services.evidence.notices import DeliveryFailed
from app.services.identities import lookup_hash
from app.services.intake.email import filing, links, replies, service
from app.services.intake.email.filing import FiledEmailRequest, file_email_request
from app.state import AppState
from app.wiring import new_engine
from tests.app_fixtures import HASH_KEY, PUBLIC_BASE_URL
from tests.engine_support import Script, new_script, run_until_settled
from tests.services.evidence.test_evidence import dump_tracking_db, until_minimised
from testsupport.receivers import SmtpSink, free_port
from testsupport.seed import add_page, add_tenant

Auth = Callable[..., dict[str, str]]
SITE = "mailed-band"
OWNER = "owner.mailed@example.com"


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.close()


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return new_script(tmp_path, default=["ok"])


@pytest.fixture
def settings_overrides(script: Script, smtp: SmtpSink, soundops_db: str) -> dict[str, Any]:
    return {
        "testing_purgers": script.path,
        "smtp_url": smtp.url,
        "worker_poll_seconds": 0.05,
        "target_postgres_url": soundops_db,  # approving checks what a subject resolves to
    }


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def file(
    state: AppState,
    *,
    message_id: str = "<req-1@mail.example>",
    subject: dict[str, Any] | None = None,
    status: Any = "awaiting_confirmation",
    review_reason: str | None = None,
    kind: str = "account",
) -> FiledEmailRequest:
    async with state.sessionmaker() as session:
        return await file_email_request(
            session,
            kind=kind,
            subject=subject or {"site_name": SITE},
            status=status,
            review_reason=review_reason,
            message_id=message_id,
            recipients=[OWNER] if status == "awaiting_confirmation" else [],
            settings=state.settings,
        )


async def reload(state: AppState, request_id: uuid.UUID) -> DeletionRequest:
    async with state.sessionmaker() as session:
        request = await repository.get_request_fresh(session, request_id)
    assert request is not None
    return request


async def event_types(state: AppState, request_id: uuid.UUID) -> list[str]:
    async with state.sessionmaker() as session:
        return [e.type for e in await repository.list_events(session, request_id)]


async def set_values(state: AppState, request_id: uuid.UUID, **values: Any) -> None:
    async with state.sessionmaker() as session:
        await session.execute(
            sa.update(DeletionRequest).where(DeletionRequest.id == request_id).values(**values)
        )
        await session.commit()


async def view(state: AppState, token: str) -> service.ConfirmationView:
    return await state.email_requests.view(token)


async def confirm(state: AppState, token: str) -> links.ConfirmOutcome:
    return await state.email_requests.confirm(token)


# --- filing -------------------------------------------------------------------------


async def test_a_message_files_one_unconfirmed_request_due_from_receipt(state: AppState) -> None:
    filed = await file(state)
    assert filed.created and filed.token is not None
    request = await reload(state, filed.request.id)
    assert request.status == "awaiting_confirmation"
    assert request.source == "email" and request.requested_by == "email"
    assert request.due_at == request.created_at + timedelta(days=30)
    assert request.confirm_expires_at == request.created_at + state.settings.email_confirm_ttl
    assert request.run_after is None and request.confirmed_at is None
    assert request.confirm_recipients == [OWNER]
    assert [t.purger for t in request.tasks] == ["meta_graph", "postgres", "mongodb", "s3"]
    assert await event_types(state, request.id) == ["created"]


async def test_the_same_message_id_twice_is_one_request(state: AppState) -> None:
    first = await file(state, message_id="<same@mail.example>")
    again = await file(state, message_id=" same@mail.example ")  # brackets, spaces: same id
    assert first.created and not again.created and again.token is None
    assert again.request.id == first.request.id
    async with state.sessionmaker() as session:
        count = await session.scalar(sa.select(sa.func.count()).select_from(DeletionRequest))
    assert count == 1
    assert await event_types(state, first.request.id) == ["created"]


async def test_concurrent_filings_of_one_message_file_one_request(state: AppState) -> None:
    results = await asyncio.gather(*(file(state, message_id="<race@x>") for _ in range(5)))
    assert sum(r.created for r in results) == 1
    assert len({r.request.id for r in results}) == 1
    assert sum(r.token is not None for r in results) == 1


async def test_another_message_for_an_open_subject_is_that_request_and_is_remembered(
    state: AppState,
) -> None:
    first = await file(state, message_id="<a@x>")
    second = await file(state, message_id="<b@x>", subject={"site_name": f"  {SITE} "})
    assert not second.created and second.request.id == first.request.id
    assert second.token is None
    await state.email_requests.reject(first.request.id, operator="op")
    # The second message was handled: fetched again later, it files nothing new ...
    again = await file(state, message_id="<b@x>")
    assert not again.created and again.request.id == first.request.id
    # ... while a new message files a new request now that none is open.
    third = await file(state, message_id="<c@x>")
    assert third.created and third.request.id != first.request.id
    assert "email_duplicate" in await event_types(state, first.request.id)


async def test_an_open_rest_request_for_the_subject_is_returned(
    state: AppState, client: httpx.AsyncClient, auth: Auth
) -> None:
    rest = await client.post(
        "/v1/deletion-requests",
        json={"kind": "meta_data", "subject": {"ig_username": "mailed.artist"}},
        headers=auth(),
    )
    filed = await file(state, kind="meta_data", subject={"ig_username": "@Mailed.Artist"})
    assert not filed.created and str(filed.request.id) == rest.json()["id"]
    assert filed.request.status == "pending"


async def test_the_subject_is_validated_and_normalised_as_for_rest(
    state: AppState, client: httpx.AsyncClient, auth: Auth
) -> None:
    with pytest.raises(Unprocessable):
        await file(state, subject={"site_name": "x", "owner_email": "a@example.com"})
    with pytest.raises(Unprocessable):
        await file(state, kind="meta_data", subject={"ig_username": "no spaces allowed"})
    filed = await file(state, kind="meta_data", subject={"facebook_page_name": " Lunar  ÉCHOES"})
    assert filed.request.subject == {"facebook_page_name": "lunar échoes"}
    # The same subject filed by REST has the same key, but files a verified request of its
    # own: it is never answered with the unverified one from e-mail.
    rest = await client.post(
        "/v1/deletion-requests",
        json={"kind": "meta_data", "subject": {"facebook_page_name": "lunar échoes"}},
        headers=auth(),
    )
    assert rest.status_code == 202 and rest.json()["id"] != str(filed.request.id)
    assert (await reload(state, uuid.UUID(rest.json()["id"]))).subject_key == (
        filed.request.subject_key
    )
    # Look-ups by the identity find both.
    listed = await client.get(
        "/v1/deletion-requests",
        params={"subject": "facebook_page_name=Lunar Échoes"},
        headers=auth(),
    )
    assert {i["id"] for i in listed.json()["items"]} == {str(filed.request.id), rest.json()["id"]}


async def test_filing_refuses_what_an_email_cannot_ask(state: AppState) -> None:
    with pytest.raises(ValueError, match="review_reason"):
        await file(state, status="needs_review", review_reason="because")
    with pytest.raises(ValueError, match="address on file"):
        async with state.sessionmaker() as session:
            await file_email_request(
                session,
                kind="account",
                subject={"site_name": SITE},
                status="awaiting_confirmation",
                review_reason=None,
                message_id="<x@y>",
                recipients=[],
                settings=state.settings,
            )
    with pytest.raises(ValueError, match="not filed from e-mail"):
        await file(
            state,
            kind="instagram_disconnect",
            subject={"tenant_id": str(uuid.uuid4()), "instagram_account_id": str(uuid.uuid4())},
        )
    with pytest.raises(ValueError, match="Message-ID"):
        await file(state, message_id=" <> ")


async def test_a_message_recorded_as_handled_files_nothing(state: AppState) -> None:
    async with state.sessionmaker() as session:
        assert await filing.record_email(
            session, message_id="<ignored@x>", outcome="ignored", settings=state.settings
        )
        assert not await filing.record_email(
            session, message_id="<ignored@x>", outcome="ignored", settings=state.settings
        )
    with pytest.raises(Conflict, match="ignored"):
        await file(state, message_id="<ignored@x>")


# --- the token ----------------------------------------------------------------------


async def test_the_token_is_stored_only_as_a_keyed_hash(state: AppState) -> None:
    message_id = "<secret-message-id-4711@mail.example>"
    filed = await file(state, message_id=message_id)
    assert filed.token is not None and len(filed.token) >= 43
    dump = await dump_tracking_db(state)
    assert filed.token not in dump
    assert "secret-message-id-4711" not in dump
    request = await reload(state, filed.request.id)
    expected = keyed_hash(HASH_KEY.encode(), f"email-confirm-token={filed.token}")
    assert request.confirm_token_hash == expected
    assert expected in dump
    # Tokens are random: another request gets another one.
    other = await file(state, message_id="<other@x>", subject={"site_name": "other-band"})
    assert other.token not in (None, filed.token)


async def test_the_link_page_shows_what_will_be_deleted_and_changes_nothing(
    state: AppState,
) -> None:
    filed = await file(state)
    assert filed.token is not None
    before = await reload(state, filed.request.id)
    events = await event_types(state, filed.request.id)
    dump = await dump_tracking_db(state)
    for _ in range(3):  # a mail scanner, then the person, then a reload
        shown = await view(state, filed.token)
        assert shown.state == "valid" and shown.kind == "account" and shown.counted
        assert {i.purger for i in shown.stores} == {"meta_graph", "postgres", "mongodb", "s3"}
        assert all(i.result.deleted == {f"{i.purger}_items": 1} for i in shown.stores)
    after = await reload(state, filed.request.id)
    assert after.status == "awaiting_confirmation"
    assert after.updated_at == before.updated_at
    assert await event_types(state, filed.request.id) == events
    assert await dump_tracking_db(state) == dump
    # The link still works after being looked at.
    assert (await confirm(state, filed.token)).outcome == "confirmed"


async def test_unknown_and_malformed_tokens(state: AppState) -> None:
    await file(state)
    for token in ("A" * 43, "short", "../../etc", "x" * 500, ""):
        assert (await view(state, token)).state == "unknown"
        assert (await confirm(state, token)).outcome == "unknown"


async def test_the_post_confirms_once_and_wakes_the_queue(state: AppState) -> None:
    filed = await file(state)
    assert filed.token is not None
    confirmed_before = metric("deletion_email_confirmations_confirmed_total")
    outcomes = await asyncio.gather(*(confirm(state, filed.token) for _ in range(4)))
    assert sorted(o.outcome for o in outcomes) == ["confirmed", "used", "used", "used"]
    assert metric("deletion_email_confirmations_confirmed_total") == confirmed_before + 1
    request = await reload(state, filed.request.id)
    assert request.status == "pending" and request.confirmed_at is not None
    assert request.run_after is not None
    assert (await event_types(state, filed.request.id)).count("confirmed") == 1
    # Used: the page says so, and nothing changes any more.
    assert (await view(state, filed.token)).state == "used"
    again = await confirm(state, filed.token)
    assert again.outcome == "used"
    assert (await reload(state, filed.request.id)).updated_at == request.updated_at
    # Now it runs, like any request.
    statuses = await run_until_settled(state, [str(filed.request.id)])
    assert statuses == {str(filed.request.id): "completed"}
    assert (await view(state, filed.token)).state == "used"


async def test_an_expired_link_is_cancelled_with_the_reason_and_changes_nothing(
    state: AppState, script: Script
) -> None:
    filed = await file(state)
    assert filed.token is not None
    expired_before = metric("deletion_email_confirmations_expired_total")
    engine = new_engine(state, "w")
    assert await engine.expire_confirmations() == 0  # not yet
    await set_values(state, filed.request.id, confirm_expires_at=utcnow() - timedelta(seconds=1))
    # Past its time, before the sweep: the link already says expired and confirms nothing.
    assert (await view(state, filed.token)).state == "expired"
    assert (await confirm(state, filed.token)).outcome == "expired"
    assert (await reload(state, filed.request.id)).status == "awaiting_confirmation"

    assert await engine.expire_confirmations() == 1
    assert await engine.expire_confirmations() == 0
    request = await reload(state, filed.request.id)
    assert request.status == "cancelled"
    assert request.status_reason == "confirmation link expired"
    assert request.confirm_recipients is None
    assert metric("deletion_email_confirmations_expired_total") == expired_before + 1
    assert "confirmation_expired" in await event_types(state, filed.request.id)
    assert (await view(state, filed.token)).state == "expired"
    assert (await confirm(state, filed.token)).outcome == "expired"
    # A worker minimises it and runs no purger.
    minimised = await until_minimised(state, str(filed.request.id))
    assert minimised.status == "cancelled"
    assert SITE not in str(minimised.subject)
    assert script.starts() == []
    assert {t.status for t in minimised.tasks} == {"pending"}


async def test_the_worker_sweeps_expired_links_on_its_tick(state: AppState) -> None:
    filed = await file(state)
    await set_values(state, filed.request.id, confirm_expires_at=utcnow() - timedelta(minutes=1))
    statuses = await run_until_settled(state, [str(filed.request.id)])
    assert statuses == {str(filed.request.id): "cancelled"}


async def test_a_reissued_link_replaces_the_old_one(state: AppState) -> None:
    filed = await file(state)
    assert filed.token is not None
    async with state.sessionmaker() as session:
        token = await links.reissue_confirmation(session, filed.request.id, settings=state.settings)
    assert token is not None and token != filed.token
    assert (await view(state, filed.token)).state == "unknown"
    assert (await view(state, token)).state == "valid"
    assert (await confirm(state, token)).outcome == "confirmed"
    async with state.sessionmaker() as session:
        assert (
            await links.reissue_confirmation(session, filed.request.id, settings=state.settings)
            is None
        )


# --- never run unconfirmed ----------------------------------------------------------


async def test_the_worker_never_claims_unconfirmed_or_unreviewed_requests(
    state: AppState, script: Script
) -> None:
    waiting = await file(state, message_id="<w@x>")
    review = await file(
        state,
        message_id="<r@x>",
        subject={"site_name": "review-band"},
        status="needs_review",
        review_reason="dmarc_fail",
    )
    # Even due in the queue's eyes, they are not work for a worker.
    for filed in (waiting, review):
        await set_values(state, filed.request.id, run_after=utcnow() - timedelta(hours=1))
    engine = new_engine(state, "w")
    assert await engine.claim() is None
    async with state.sessionmaker() as session:
        assert await repository.queue_depth(session, utcnow()) == 0
    assert (await reload(state, waiting.request.id)).status == "awaiting_confirmation"
    assert (await reload(state, review.request.id)).status == "needs_review"
    assert script.starts() == []


# --- review -------------------------------------------------------------------------


async def test_approve_moves_a_reviewed_request_to_pending_once(
    state: AppState, soundops_db: str
) -> None:
    tenant_id = await add_tenant(soundops_db, SITE, OWNER)
    filed = await file(state, status="needs_review", review_reason="sender_not_on_file")
    assert filed.token is None
    approved = await state.email_requests.approve(filed.request.id, operator="op")
    assert approved.status == "pending" and approved.run_after is not None
    assert approved.review_reason == "sender_not_on_file"
    assert approved.pinned == {"tenant_ids": [str(tenant_id)], "account_ids": []}
    with pytest.raises(Conflict, match="only needs_review"):
        await state.email_requests.approve(filed.request.id, operator="op")
    with pytest.raises(NotFound):
        await state.email_requests.approve(uuid.uuid4(), operator="op")
    waiting = await file(state, message_id="<w@x>", subject={"site_name": "other-band"})
    with pytest.raises(Conflict):
        await state.email_requests.approve(waiting.request.id, operator="op")
    assert "approved" in await event_types(state, filed.request.id)
    statuses = await run_until_settled(state, [str(filed.request.id)])
    assert statuses == {str(filed.request.id): "completed"}


async def test_approve_with_a_corrected_subject(state: AppState, soundops_db: str) -> None:
    tenant_id = await add_tenant(soundops_db, "lunar-echoes", "mara@lunar-echoes.example")
    account_id = await add_page(soundops_db, tenant_id, "Lunar Échoes")
    filed = await file(
        state,
        kind="meta_data",
        subject={"facebook_page_name": "Lunar Echos"},
        status="needs_review",
        review_reason="no_match",
    )
    with pytest.raises(Unprocessable):
        await state.email_requests.approve(
            filed.request.id, operator="op", subject={"site_name": "not-a-meta-identity"}
        )
    assert (await reload(state, filed.request.id)).status == "needs_review"
    approved = await state.email_requests.approve(
        filed.request.id, operator="op", subject={"facebook_page_name": " Lunar ÉCHOES "}
    )
    assert approved.status == "pending"
    assert approved.subject == {"facebook_page_name": "lunar échoes"}
    assert approved.pinned == {"tenant_ids": [str(tenant_id)], "account_ids": [str(account_id)]}
    key = state.settings.effective_hash_key
    page, _ = await state.requests.list(
        repository.RequestFilter(subject_hash=lookup_hash(key, "facebook_page_name=lunar échoes")),
        limit=5,
        cursor=None,
    )
    assert [r.id for r in page] == [filed.request.id]
    old, _ = await state.requests.list(
        repository.RequestFilter(subject_hash=lookup_hash(key, "facebook_page_name=Lunar Echos")),
        limit=5,
        cursor=None,
    )
    assert old == []


async def test_approve_to_a_subject_with_an_unverified_request_approves_this_one(
    state: AppState, soundops_db: str
) -> None:
    await add_tenant(soundops_db, "taken-band", OWNER)
    waiting = await file(state, message_id="<open@x>", subject={"site_name": "taken-band"})
    filed = await file(
        state,
        message_id="<review@x>",
        subject={"site_name": "unknown-band"},
        status="needs_review",
        review_reason="no_match",
    )
    approved = await state.email_requests.approve(
        filed.request.id, operator="op", subject={"site_name": "taken-band"}
    )
    assert approved.status == "pending" and approved.subject == {"site_name": "taken-band"}
    # The unverified one is left as it was; confirmed later, it joins the approved one.
    assert (await reload(state, waiting.request.id)).status == "awaiting_confirmation"
    assert waiting.token is not None
    outcome = await confirm(state, waiting.token)
    assert outcome.outcome == "confirmed" and outcome.request is not None
    assert outcome.request.id == filed.request.id


async def rest_request(client: httpx.AsyncClient, auth: Auth, site: str) -> uuid.UUID:
    response = await client.post(
        "/v1/deletion-requests",
        json={"kind": "account", "subject": {"site_name": site}},
        headers=auth(),
    )
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


@pytest.mark.parametrize("corrected", [False, True])
async def test_approving_while_a_verified_request_is_open_closes_this_one_as_its_duplicate(
    state: AppState,
    client: httpx.AsyncClient,
    auth: Auth,
    script: Script,
    corrected: bool,
    soundops_db: str,
) -> None:
    await add_tenant(soundops_db, "taken-band", OWNER)
    filed = await file(
        state,
        message_id="<review@x>",
        subject={"site_name": "unknown-band" if corrected else "taken-band"},
        status="needs_review",
        review_reason="no_match" if corrected else "sender_not_on_file",
    )
    rest_id = await rest_request(client, auth, "taken-band")
    closed = await state.email_requests.approve(
        filed.request.id,
        operator="op",
        subject={"site_name": "taken-band"} if corrected else None,
    )
    assert closed.id == filed.request.id and closed.status == "cancelled"
    assert closed.status_reason == f"duplicate of request {rest_id}"
    assert "closed_as_duplicate" in await event_types(state, filed.request.id)
    assert "email_duplicate" in await event_types(state, rest_id)
    assert (await reload(state, rest_id)).status == "pending"
    statuses = await run_until_settled(state, [str(rest_id), str(filed.request.id)])
    assert statuses == {str(rest_id): "completed", str(filed.request.id): "cancelled"}
    assert {c["request"] for c in script.starts()} == {str(rest_id)}


async def test_confirming_while_a_verified_request_is_open_joins_it(
    state: AppState, client: httpx.AsyncClient, auth: Auth
) -> None:
    filed = await file(state, subject={"site_name": "taken-band"})
    assert filed.token is not None
    rest_id = await rest_request(client, auth, "taken-band")
    outcome = await confirm(state, filed.token)
    assert outcome.outcome == "confirmed"
    assert outcome.request is not None and outcome.request.id == rest_id
    mine = await reload(state, filed.request.id)
    assert mine.status == "cancelled" and mine.status_reason == f"duplicate of request {rest_id}"
    assert mine.confirmed_at is not None
    assert (await confirm(state, filed.token)).outcome == "used"
    assert (await reload(state, rest_id)).status == "pending"


async def test_a_rejected_request_deletes_nothing_and_is_never_run(
    state: AppState, script: Script
) -> None:
    review = await file(
        state, message_id="<r@x>", status="needs_review", review_reason="several_tenants"
    )
    waiting = await file(state, message_id="<w@x>", subject={"site_name": "waiting-band"})
    assert waiting.token is not None
    rejected = await state.email_requests.reject(
        review.request.id, operator="op", reason="not the owner"
    )
    assert rejected.status == "cancelled" and rejected.status_reason == "not the owner"
    default = await state.email_requests.reject(waiting.request.id, operator="op")
    assert default.status_reason == "rejected by an operator"
    assert default.confirm_recipients is None
    assert (await view(state, waiting.token)).state == "cancelled"
    assert (await confirm(state, waiting.token)).outcome == "cancelled"
    with pytest.raises(Conflict, match="cannot be rejected"):
        await state.email_requests.reject(review.request.id, operator="op")
    with pytest.raises(NotFound):
        await state.email_requests.reject(uuid.uuid4(), operator="op")
    for request_id in (review.request.id, waiting.request.id):
        minimised = await until_minimised(state, str(request_id))
        assert minimised.status == "cancelled"
        assert {t.status for t in minimised.tasks} == {"pending"}
        assert "rejected" in await event_types(state, request_id)
    assert script.starts() == []
    dump = await dump_tracking_db(state)
    assert SITE not in dump and OWNER not in dump


async def test_a_pending_request_cannot_be_rejected(
    state: AppState, client: httpx.AsyncClient, auth: Auth
) -> None:
    rest = await client.post(
        "/v1/deletion-requests",
        json={"kind": "account", "subject": {"site_name": SITE}},
        headers=auth(),
    )
    with pytest.raises(Conflict):
        await state.email_requests.reject(uuid.UUID(rest.json()["id"]), operator="op")


async def test_a_cancelled_unconfirmed_request_loses_its_recipients(
    state: AppState, client: httpx.AsyncClient, auth: Auth
) -> None:
    filed = await file(state)
    response = await client.post(f"/v1/deletion-requests/{filed.request.id}/cancel", headers=auth())
    assert response.json()["status"] == "cancelled"
    minimised = await until_minimised(state, str(filed.request.id))
    assert minimised.confirm_recipients is None
    assert OWNER not in await dump_tracking_db(state)


# --- the mail -----------------------------------------------------------------------


async def test_the_confirmation_mail_reaches_the_address_on_file(
    state: AppState, smtp: SmtpSink
) -> None:
    filed = await file(state)
    assert filed.token is not None
    link = links.confirmation_link(state.settings, filed.token)
    assert link == f"{PUBLIC_BASE_URL}/deletion-confirm/{filed.token}"
    sent_before = metric("deletion_email_confirmations_sent_total")
    await replies.send_confirmation_link(
        state.settings, OWNER, link, "account", expires_at=filed.request.confirm_expires_at
    )
    assert metric("deletion_email_confirmations_sent_total") == sent_before + 1
    ((mail_from, recipients, message),) = smtp.messages
    assert recipients == [OWNER] and message["To"] == OWNER
    assert mail_from == state.settings.mail_from
    assert message["Subject"] == "Confirm your SoundOps data deletion request"
    assert message["Auto-Submitted"] == "auto-generated"
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    body = payload.decode()
    assert link in body
    assert SITE not in body


async def test_an_undeliverable_confirmation_mail_raises_and_counts_nothing(
    state: AppState,
) -> None:
    sent_before = metric("deletion_email_confirmations_sent_total")
    down = state.settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{free_port()}"})
    with pytest.raises(DeliveryFailed):
        await replies.send_confirmation_link(down, OWNER, "https://x/y", "meta_data")
    with pytest.raises(DeliveryFailed):
        await replies.send_confirmation_link(
            state.settings, "owner@example.com\r\nBcc: x@evil.example", "https://x/y", "account"
        )
    assert metric("deletion_email_confirmations_sent_total") == sent_before
