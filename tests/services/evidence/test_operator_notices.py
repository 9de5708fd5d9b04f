"""Nobody left guessing (#16 item 5): failed and overdue requests reach the operators
(``DELETION_OPERATOR_EMAIL`` and the webhook, once each, retried until delivered, without
personal data), and the status page claims an alert only when one was delivered."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.models import DeletionRequest, OperatorNotice, utcnow
from app.repository import list_events
from app.services.evidence.notices import SIGNATURE_HEADER, verify_signature
from app.state import AppState
from app.wiring import new_engine
from tests.engine_support import Script, new_script, run_until_settled
from testsupport.receivers import SmtpSink, WebhookReceiver

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"
WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789"
OPERATOR = "dpo-desk@soundops.example"
# The subject's values: none may reach an operator notice.
PERMANENT, EXHAUSTED, LATE = "notice-band-perm", "notice-band-retries", "notice-band-late"
NOTIFY = "Fan.Person@example.com"
REASON = "Asked by Fan Person on the phone"


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
    return new_script(
        tmp_path,
        default=["ok"],
        purgers={
            "postgres": {"subjects": {PERMANENT: ["permanent"]}},
            "mongodb": {"subjects": {EXHAUSTED: ["transient"]}},
        },
    )


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
        "operator_email": OPERATOR,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "max_attempts": 2,
        "worker_poll_seconds": 0.05,
        # The worker's own notice sweep runs once at its start; the tests drive the rest.
        "deadline_check_seconds": 3600,
        **(marker.kwargs if marker else {}),
    }


async def file(client: httpx.AsyncClient, auth: Auth, site: str) -> str:
    body = {
        "kind": "account",
        "subject": {"site_name": site},
        "notify_email": NOTIFY,
        "reason": REASON,
    }
    response = await client.post(URL, json=body, headers=auth())
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def operator_mails(smtp: SmtpSink) -> list[Message]:
    return [message for _, rcpts, message in smtp.messages if rcpts == [OPERATOR]]


def text_of(message: Message) -> str:
    """Headers and the decoded body (quoted-printable would split values across lines)."""
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    headers = "\n".join(f"{name}: {value}" for name, value in message.items())
    return headers + "\n" + body.decode()


def webhooks(receiver: WebhookReceiver, event: str) -> list[dict[str, Any]]:
    bodies = [json.loads(d.body) for d in receiver.deliveries]
    return [b for b in bodies if b["event"] == event]


def assert_no_personal_data(*texts: str) -> None:
    for text in texts:
        for raw in (PERMANENT, EXHAUSTED, LATE, NOTIFY, NOTIFY.lower(), "Fan Person"):
            assert raw not in text, raw


async def sweep(state: AppState, *workers: str) -> int:
    """Each worker's notice sweep, all at once; how many notices they delivered."""
    engines = [new_engine(state, worker) for worker in workers]
    return sum(await asyncio.gather(*(e.notify_operators() for e in engines)))


async def status_page(client: httpx.AsyncClient, state: AppState, request_id: str) -> Any:
    code = (await state.requests.get(uuid.UUID(request_id))).confirmation_code
    html = await client.get(f"/deletion-status/{code}")
    data = await client.get(f"/deletion-status/{code}", headers={"Accept": "application/json"})
    return html.text, data.json()


async def test_a_failed_request_reaches_the_operators_once_by_mail_and_webhook(
    client: httpx.AsyncClient,
    auth: Auth,
    state: AppState,
    receiver: WebhookReceiver,
    smtp: SmtpSink,
) -> None:
    # However it failed: a purger's permanent failure, or a transient one out of retries.
    permanent = await file(client, auth, PERMANENT)
    exhausted = await file(client, auth, EXHAUSTED)
    assert await run_until_settled(state, [permanent, exhausted]) == {
        permanent: "failed",
        exhausted: "failed",
    }
    # The next sweep delivers both; neither it again nor two workers at once send more.
    assert await sweep(state, "w1") == 2
    assert await sweep(state, "w1", "w2") == 0

    notices = webhooks(receiver, "deletion.failed")
    assert sorted(n["request_id"] for n in notices) == sorted([permanent, exhausted])
    mails = operator_mails(smtp)
    assert len(mails) == 2
    for delivery in receiver.deliveries:
        assert verify_signature(
            WEBHOOK_SECRET.encode(), delivery.body, delivery.headers[SIGNATURE_HEADER]
        )
    by_id = {n["request_id"]: n for n in notices}
    assert by_id[permanent]["stores"] == [
        {"store": "postgres", "status": "failed", "attempts": 1, "error_class": "permanent"}
    ]
    assert by_id[exhausted]["stores"] == [
        {"store": "mongodb", "status": "failed", "attempts": 2, "error_class": "retries_exhausted"}
    ]
    for notice in notices:
        assert notice["kind"] == "account" and notice["status"] == "failed"
        assert notice["admin_url"].endswith(f"/admin/requests/{notice['request_id']}")
        assert notice["due_at"] and notice["failed_step"] == "stores"
    for message in mails:
        assert message["Subject"].split()[-2] in (permanent, exhausted)
        assert message["Auto-Submitted"] == "auto-generated"
        assert "/admin/requests/" in text_of(message)
    # No personal data: not in the webhook, not in the mail, not in what was recorded.
    async with state.sessionmaker() as session:
        stored = (await session.execute(sa.select(OperatorNotice.payload))).scalars().all()
    assert_no_personal_data(
        *(d.body.decode() for d in receiver.deliveries),
        *(text_of(m) for m in mails),
        json.dumps(stored),
    )
    async with state.sessionmaker() as session:
        types = [e.type for e in await list_events(session, uuid.UUID(permanent))]
    assert types.count("operator_notice_sent") == 1

    # The status page says the team was alerted: now it is true.
    html, data = await status_page(client, state, permanent)
    assert "our team has been alerted" in html and data["team_alerted"] is True


async def test_a_retry_that_fails_again_notifies_again(
    client: httpx.AsyncClient,
    auth: Auth,
    state: AppState,
    receiver: WebhookReceiver,
    smtp: SmtpSink,
) -> None:
    request_id = await file(client, auth, PERMANENT)
    await run_until_settled(state, [request_id])
    assert await sweep(state, "w1") == 1
    retried = await client.post(f"{URL}/{request_id}/retry", headers=auth())
    assert retried.status_code == 200
    # Failed again (the script says permanent): not alerted of this failure yet...
    await run_until_settled(state, [request_id])
    html, data = await status_page(client, state, request_id)
    assert data["team_alerted"] is False and "has been alerted" not in html
    # ...until its own notice is delivered: one more, no more.
    assert await sweep(state, "w1", "w2") == 1
    assert len(webhooks(receiver, "deletion.failed")) == 2
    assert len(operator_mails(smtp)) == 2
    assert (await status_page(client, state, request_id))[1]["team_alerted"] is True


async def test_an_overdue_request_is_notified_once_even_by_two_workers(
    client: httpx.AsyncClient,
    auth: Auth,
    state: AppState,
    receiver: WebhookReceiver,
    smtp: SmtpSink,
) -> None:
    request_id = await file(client, auth, LATE)  # pending: no worker runs here
    async with state.sessionmaker() as session:
        await session.execute(
            sa.update(DeletionRequest)
            .where(DeletionRequest.id == uuid.UUID(request_id))
            .values(due_at=utcnow() - timedelta(hours=1))
        )
        await session.commit()
    first, second = new_engine(state, "w1"), new_engine(state, "w2")
    marked = await asyncio.gather(first.check_deadlines(), second.check_deadlines())
    assert sum(overdue for _, overdue in marked) == 1
    assert await sweep(state, "w1", "w2") == 1
    for _ in range(2):  # the next sweeps: nothing again
        assert await first.check_deadlines() == (0, 0)
        assert await sweep(state, "w1", "w2") == 0

    (notice,) = webhooks(receiver, "deletion.overdue")
    assert notice["request_id"] == request_id and notice["status"] == "pending"
    assert notice["failed_step"] is None
    (mail,) = operator_mails(smtp)
    assert "overdue" in mail["Subject"] and request_id in mail["Subject"]
    assert "passed its due date" in text_of(mail)
    assert_no_personal_data(receiver.deliveries[0].body.decode(), text_of(mail))
    async with state.sessionmaker() as session:
        types = [e.type for e in await list_events(session, uuid.UUID(request_id))]
    assert types.count("overdue") == 1 and types.count("operator_notice_sent") == 1


async def test_smtp_and_webhook_down_then_up_deliver_later_exactly_once(
    client: httpx.AsyncClient,
    auth: Auth,
    state: AppState,
    receiver: WebhookReceiver,
    smtp: SmtpSink,
) -> None:
    smtp.close()
    receiver.status = 503
    request_id = await file(client, auth, PERMANENT)
    await run_until_settled(state, [request_id])
    assert await sweep(state, "w1") == 0
    async with state.sessionmaker() as session:
        (notice,) = (await session.execute(sa.select(OperatorNotice))).scalars().all()
        events = await list_events(session, uuid.UUID(request_id))
    assert notice.email_status == "pending" and notice.webhook_status == "pending"
    assert notice.run_after is not None and notice.delivered_at is None
    (retrying,) = [e for e in events if e.type == "operator_notice_retrying"]
    assert set(retrying.detail["errors"]) == {"email", "webhook"}
    # Configured, but nothing delivered: the page does not claim an alert.
    html, data = await status_page(client, state, request_id)
    assert data["team_alerted"] is False
    assert "has been alerted" not in html and "waits for our team" in html

    # The webhook is back first, then the mail server; other workers (a restart) go on.
    receiver.status = 200
    deadline = asyncio.get_running_loop().time() + 15
    while not receiver.deliveries:
        await sweep(state, "after-restart-1")
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    back = SmtpSink(port=smtp.port)
    try:
        while not operator_mails(back):
            await sweep(state, "after-restart-2")
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert await sweep(state, "after-restart-2", "after-restart-3") == 0
        assert len(operator_mails(back)) == 1
    finally:
        back.close()
    assert len(receiver.deliveries) == 1  # the webhook that took it is not sent again
    html, data = await status_page(client, state, request_id)
    assert data["team_alerted"] is True and "our team has been alerted" in html


@pytest.mark.settings(operator_email=None, notify_webhook_url=None)
async def test_with_nobody_to_alert_the_page_does_not_claim_an_alert(
    client: httpx.AsyncClient,
    auth: Auth,
    state: AppState,
    receiver: WebhookReceiver,
    smtp: SmtpSink,
) -> None:
    request_id = await file(client, auth, PERMANENT)
    await run_until_settled(state, [request_id])
    assert await sweep(state, "w1") == 0
    assert receiver.attempts == 0 and operator_mails(smtp) == []
    html, data = await status_page(client, state, request_id)
    assert data["status"] == "failed" and data["team_alerted"] is False
    assert "has been alerted" not in html
    assert "could not be completed automatically and waits for our team" in html
    async with state.sessionmaker() as session:
        types = [e.type for e in await list_events(session, uuid.UUID(request_id))]
    assert types.count("operator_not_notified") == 1
    metrics = (await client.get("/metrics")).text
    assert 'deletion_operator_notices_total{event="deletion.failed",outcome="unconfigured"}' in (
        metrics
    )
