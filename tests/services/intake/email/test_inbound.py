"""E-mail intake through both ways in: the corpus, replies, mail loops, crashes.

Real servers: PostgreSQL (the SoundOps database with the fixed e-mail world, and the
tracking store on both backends), Dovecot for IMAP, aiosmtpd for the mail the service
sends. Every corpus message goes through ``POST /v1/inbound-email`` and through
``mailbox poll`` and must give the outcome expected.yaml names.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage, Message
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from app.main import create_app
from app.models import Base, DeletionRequest, EmailIntake, utcnow
from app.services.intake.email.filing import message_id_hash
from app.services.intake.email.links import mail_unsent_links
from app.services.intake.email.mailbox import MailboxPoller
from app.services.intake.email.parse import parse_message
from app.settings import Settings
from app.state import AppState
from tests.app_fixtures import bearer, make_settings, mint
from tests.services.intake.email.corpus import (
    TRUSTED_AUTHSERV_ID,
    CorpusCase,
    corpus_case,
    load_corpus,
)
from tests.services.intake.email.world import EmailWorld, seed_email_world
from testsupport.cli import command, environment
from testsupport.mail import many_parts
from testsupport.receivers import SmtpSink

URL = "/v1/inbound-email"
RAW = {"Content-Type": "message/rfc822"}


@dataclass
class Intake:
    world: EmailWorld
    settings: Settings
    state: AppState
    client: httpx.AsyncClient
    smtp: SmtpSink
    dovecot: Any

    async def post(self, raw: bytes) -> httpx.Response:
        return await self.client.post(
            URL, content=raw, headers={**RAW, **bearer(mint(("deletions:write",)))}
        )

    async def poll(self, raw: bytes | None = None) -> dict[str, int]:
        if raw is not None:
            self.dovecot.append(raw, user="privacy")
        report = await MailboxPoller(self.settings, self.state.inbound).poll_once()
        return dict(report.outcomes)

    async def intake_row(self, raw: bytes) -> EmailIntake | None:
        mail = parse_message(raw, authserv_id=TRUSTED_AUTHSERV_ID)
        async with self.state.sessionmaker() as session:
            return await session.get(EmailIntake, message_id_hash(self.settings, mail.message_id))

    async def request(self, request_id: uuid.UUID) -> DeletionRequest:
        async with self.state.sessionmaker() as session:
            found = await session.get(DeletionRequest, request_id)
            assert found is not None
            return found

    async def requests(self) -> list[DeletionRequest]:
        async with self.state.sessionmaker() as session:
            return list((await session.execute(sa.select(DeletionRequest))).scalars())

    def sent(self) -> list[tuple[list[str], Message]]:
        return [(rcpts, message) for _, rcpts, message in self.smtp.messages]


@pytest.fixture
async def intake(
    tracking_url: str,
    fresh_pg_database: Any,
    soundops_template_database: str,
    dovecot_server: Any,
) -> AsyncIterator[Intake]:
    database = fresh_pg_database(template=soundops_template_database, prefix="email")
    world = await seed_email_world(database.url)
    dovecot_server.reset("privacy")
    smtp = SmtpSink()
    settings = make_settings(
        tracking_url,
        target_postgres_url=database.url,
        smtp_url=smtp.url,
        email_authserv_id=TRUSTED_AUTHSERV_ID,
        imap_url=dovecot_server.url("privacy"),
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield Intake(world, settings, app.state.services, client, smtp, dovecot_server)
    finally:
        smtp.close()


def _text(message: Message) -> str:
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def _deliver(intake: Intake, case: CorpusCase, way: str) -> tuple[str, uuid.UUID | None]:
    if way == "http":
        answer = await intake.post(case.raw)
        if answer.status_code == 413:
            return "too_large", None
        assert answer.status_code == 202, answer.text
        body = answer.json()
        return body["outcome"], uuid.UUID(body["request_id"]) if body["request_id"] else None
    outcomes = await intake.poll(case.raw)
    assert len(outcomes) == 1 and sum(outcomes.values()) == 1, outcomes
    (outcome,) = outcomes
    row = await intake.intake_row(case.raw)
    return outcome, row.request_id if row is not None else None


async def _check_case(intake: Intake, case: CorpusCase, way: str) -> list[str]:
    """Handle one corpus message; the mismatches with its expectation (empty: all good)."""
    expected = case.expected
    if expected.get("after"):
        await _deliver(intake, corpus_case(expected["after"]), way)
    mails_before = len(intake.sent())
    outcome, request_id = await _deliver(intake, case, way)
    problems = []
    if outcome != expected["outcome"]:
        problems.append(f"{case.name} via {way}: outcome {outcome}, expected {expected['outcome']}")
        return problems
    new_mail = intake.sent()[mails_before:]
    if outcome in ("awaiting_confirmation", "needs_review"):
        assert request_id is not None
        request = await intake.request(request_id)
        if request.status != outcome or request.source != "email":
            problems.append(f"{case.name}: stored as {request.status} from {request.source}")
        if request.review_reason != expected["review_reason"]:
            problems.append(
                f"{case.name} via {way}: reason {request.review_reason},"
                f" expected {expected['review_reason']}"
            )
        if outcome == "awaiting_confirmation":
            # The link goes to the address on file (the verified sender), never elsewhere.
            recipients = [r for rcpts, _ in new_mail for r in rcpts]
            if recipients != [expected["sender"]]:
                problems.append(f"{case.name}: link mailed to {recipients}")
            for address in expected.get("reply_to") or []:
                if address in recipients:
                    problems.append(f"{case.name}: mailed to Reply-To")
            # Pinned to the one matching tenant the sender owns, never to another.
            owned = [str(t.id) for t in intake.world.owned_by(expected["sender"])]
            if not request.pinned or request.pinned["tenant_ids"] != owned:
                problems.append(f"{case.name}: pinned to {request.pinned}, expected {owned}")
        elif new_mail:
            problems.append(f"{case.name}: mail sent for a request in review")
        # Keep the world fresh for the next message: no open request stays behind.
        await intake.state.email_requests.reject(request_id, operator="test")
    elif expected["reply"] or (
        outcome == "too_large"
        and way == "imap"
        and not expected["automatic"]
        and not expected["dmarc_fail"]
    ):
        # An ignored message gets the explanatory reply; one too large to read (over IMAP:
        # over HTTP it is a 413 to the gateway) gets one saying so.
        if [r for rcpts, _ in new_mail for r in rcpts] != [expected["sender"]]:
            problems.append(f"{case.name}: expected one reply to the sender, got {new_mail}")
        elif new_mail[0][1]["Auto-Submitted"] != "auto-replied":
            problems.append(f"{case.name}: the reply is not marked Auto-Submitted")
    elif new_mail:
        problems.append(f"{case.name} via {way}: unexpected mail {[m[0] for m in new_mail]}")
    return problems


@pytest.mark.slow
@pytest.mark.parametrize("way", ["http", "imap"])
async def test_every_corpus_message_gives_its_expected_outcome(intake: Intake, way: str) -> None:
    corpus = load_corpus()
    assert len(corpus) >= 25
    problems: list[str] = []
    for case in corpus:
        problems += await _check_case(intake, case, way)
    assert problems == []
    # Nothing filed from e-mail ever reached pending on its own.
    statuses = {r.status for r in await intake.requests()}
    assert statuses <= {"cancelled"}, statuses
    if way == "imap":
        assert intake.dovecot.list_messages("INBOX", user="privacy") == []
        moved = intake.dovecot.list_messages(intake.settings.imap_done_folder, user="privacy")
        assert len(moved) == len(corpus) + sum(1 for c in corpus if c.expected.get("after"))


def _counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_same_message_twice_is_handled_once_by_either_way(intake: Intake) -> None:
    case = corpus_case("01-plain-account.eml")
    messages = "deletion_email_messages_total"
    before = {
        "awaiting": _counter(messages, outcome="awaiting_confirmation", via="http"),
        "duplicate_imap": _counter(messages, outcome="duplicate", via="imap"),
        "duplicate_http": _counter(messages, outcome="duplicate", via="http"),
        "sent": _counter("deletion_email_confirmations_sent_total"),
    }
    first = await intake.post(case.raw)
    assert first.json()["outcome"] == "awaiting_confirmation"
    assert await intake.poll(case.raw) == {"duplicate": 1}
    again = await intake.post(case.raw)
    assert again.json() == {"outcome": "duplicate", "request_id": first.json()["request_id"]}
    assert len(await intake.requests()) == 1
    assert len(intake.sent()) == 1  # one link, not three
    after = {
        "awaiting": _counter(messages, outcome="awaiting_confirmation", via="http"),
        "duplicate_imap": _counter(messages, outcome="duplicate", via="imap"),
        "duplicate_http": _counter(messages, outcome="duplicate", via="http"),
        "sent": _counter("deletion_email_confirmations_sent_total"),
    }
    assert {k: after[k] - before[k] for k in before} == {
        "awaiting": 1,
        "duplicate_imap": 1,
        "duplicate_http": 1,
        "sent": 1,
    }


async def test_a_message_naming_an_open_request_files_nothing_new(intake: Intake) -> None:
    first = await intake.post(corpus_case("01-plain-account.eml").raw)
    other = await intake.post(corpus_case("08-re-fwd-lowercase.eml").raw)  # same site, new id
    assert other.json() == {"outcome": "duplicate", "request_id": first.json()["request_id"]}
    assert len(await intake.requests()) == 1


async def test_bad_bodies_are_refused_and_change_nothing(intake: Intake) -> None:
    raw = corpus_case("01-plain-account.eml").raw
    token = bearer(mint(("deletions:write",)))
    wrong_type = await intake.client.post(
        URL, content=raw, headers={**token, "Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    assert wrong_type.headers["content-type"] == "application/problem+json"
    too_big = await intake.post(corpus_case("17-oversize-2mib.eml").raw)
    assert too_big.status_code == 413
    assert too_big.json()["status"] == 413
    unauthenticated = await intake.client.post(URL, content=raw, headers=RAW)
    assert unauthenticated.status_code == 401
    read_only = await intake.client.post(
        URL, content=raw, headers={**RAW, **bearer(mint(("deletions:read",)))}
    )
    assert read_only.status_code == 403
    assert await intake.requests() == []
    assert intake.sent() == []


async def test_replies_go_at_most_once_a_day_per_address(intake: Intake) -> None:
    raw = corpus_case("31-neither-kind.eml").raw
    assert (await intake.post(raw)).json()["outcome"] == "ignored"
    assert len(intake.sent()) == 1
    # Another message from the same sender (new Message-ID): ignored, no second reply.
    again = raw.replace(b"Message-ID: <", b"Message-ID: <again-", 1)
    assert again != raw
    assert (await intake.post(again)).json()["outcome"] == "ignored"
    assert len(intake.sent()) == 1
    (reply,) = intake.sent()
    assert "Account Deletion Request" in _text(reply[1])


@pytest.mark.parametrize("name", ["32-auto-submitted.eml", "33-precedence-bulk.eml"])
async def test_automatic_senders_never_get_a_reply(intake: Intake, name: str) -> None:
    assert (await intake.post(corpus_case(name).raw)).json()["outcome"] == "ignored"
    assert intake.sent() == []


async def test_smtp_down_files_once_and_mails_the_link_when_the_message_comes_again(
    intake: Intake,
) -> None:
    raw = corpus_case("01-plain-account.eml").raw
    intake.smtp.close()  # the mail server is down
    down = await intake.post(raw)
    assert down.status_code == 503
    assert down.json()["status"] == 503
    (request,) = await intake.requests()
    assert request.status == "awaiting_confirmation"
    intake.smtp = SmtpSink()
    settings = intake.settings.model_copy(update={"smtp_url": intake.smtp.url})
    intake.state.inbound._settings = settings  # the mail server is back, on a new port
    try:
        again = await intake.post(raw)
        assert again.json() == {"outcome": "duplicate", "request_id": str(request.id)}
        assert [rcpts for rcpts, _ in intake.sent()] == [["mara@lunar-echoes.example"]]
        assert "/deletion-confirm/" in _text(intake.sent()[0][1])
        # Once mailed, never again.
        await intake.post(raw)
        assert len(intake.sent()) == 1
    finally:
        intake.smtp.close()


def _poll_process(intake: Intake, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELETION_")}
    settings = intake.settings
    assert settings.imap_url is not None and settings.hash_key is not None
    env.update(
        DELETION_ENVIRONMENT="test",
        DELETION_DATABASE_URL=settings.database_url,
        DELETION_TARGET_POSTGRES_URL=str(settings.target_postgres_url),
        DELETION_SMTP_URL=str(settings.smtp_url),
        DELETION_IMAP_URL=settings.imap_url.get_secret_value(),
        DELETION_EMAIL_AUTHSERV_ID=TRUSTED_AUTHSERV_ID,
        DELETION_HASH_KEY=settings.hash_key.get_secret_value(),
        DELETION_JWT_SECRET="unused-in-this-process-0123456789",
        DELETION_RECEIPT_SIGNING_KEY=str(
            settings.receipt_signing_key.get_secret_value() if settings.receipt_signing_key else ""
        ),
        DELETION_S3_ENABLED="false",
        **extra,
    )
    return subprocess.run(
        command("mailbox", "poll", "--once"),
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
async def test_a_poller_killed_between_filing_and_moving_files_nothing_twice(
    intake: Intake,
) -> None:
    raw = corpus_case("01-plain-account.eml").raw
    intake.dovecot.append(raw, user="privacy")
    died = await asyncio.to_thread(
        _poll_process, intake, DELETION_TESTING_EXIT_AFTER_HANDLING="true"
    )
    assert died.returncode == 75, died.stderr
    (request,) = await intake.requests()
    assert request.status == "awaiting_confirmation"
    assert len(intake.dovecot.list_messages("INBOX", user="privacy")) == 1  # not moved

    done = await asyncio.to_thread(_poll_process, intake)
    assert done.returncode == 0, done.stderr
    assert "duplicate 1" in done.stdout and "moved 1" in done.stdout
    assert [r.id for r in await intake.requests()] == [request.id]
    assert len(intake.sent()) == 1  # the link went out once, before the crash
    assert intake.dovecot.list_messages("INBOX", user="privacy") == []
    assert len(intake.dovecot.list_messages("Processed", user="privacy")) == 1
    # And polling again finds nothing to do.
    assert await intake.poll() == {}


async def test_nothing_of_an_ignored_message_is_kept(intake: Intake) -> None:
    raw = corpus_case("31-neither-kind.eml").raw
    assert (await intake.post(raw)).json()["outcome"] == "ignored"
    assert (await intake.poll(raw)) == {"duplicate": 1}
    chunks = []
    async with intake.state.tracking_db.connect() as conn:
        for table in Base.metadata.sorted_tables:
            chunks += [repr(tuple(r)) for r in (await conn.execute(sa.select(table))).all()]
    dump = "\n".join(chunks)
    assert len(chunks) == 2  # the Message-ID's hash and the reply slot's, nothing else
    for needle in ("ola.nordmann", "nightferry", "invoice", "e0a2c4e6", "Question"):
        assert needle not in dump


async def test_soundops_database_down_answers_503_and_files_nothing(tracking_url: str) -> None:
    smtp = SmtpSink()
    settings = make_settings(
        tracking_url,
        target_postgres_url="postgresql+asyncpg://nobody:secret@127.0.0.1:9/soundops",
        smtp_url=smtp.url,
        email_authserv_id=TRUSTED_AUTHSERV_ID,
    )
    app = create_app(settings)
    raw = corpus_case("01-plain-account.eml").raw
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                headers = {**RAW, **bearer(mint(("deletions:write",)))}
                answer = await client.post(URL, content=raw, headers=headers)
                assert answer.status_code == 503
                assert answer.headers["content-type"] == "application/problem+json"
                assert "mara" not in answer.text
                state: AppState = app.state.services
                async with state.sessionmaker() as session:
                    kept = (await session.execute(sa.select(EmailIntake))).all()
                    filed = (await session.execute(sa.select(DeletionRequest))).all()
                assert kept == [] and filed == []  # the same message later is handled anew
    finally:
        smtp.close()
    assert smtp.messages == []


async def test_a_message_that_cannot_be_handled_stays_and_the_others_go_on(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison = corpus_case("01-plain-account.eml").raw
    fine = corpus_case("31-neither-kind.eml").raw
    inbound = intake.state.inbound
    handle = inbound.handle

    async def failing(raw: bytes, **kwargs: Any) -> Any:
        if raw.rstrip() == poison.rstrip():
            raise RuntimeError("a bug of ours")
        return await handle(raw, **kwargs)

    monkeypatch.setattr(inbound, "handle", failing)
    intake.dovecot.append(poison, user="privacy")
    intake.dovecot.append(fine, user="privacy")
    report = await MailboxPoller(intake.settings, inbound).poll_once()
    assert dict(report.outcomes) == {"ignored": 1}
    assert (report.moved, report.left) == (1, 1)
    (left,) = intake.dovecot.list_messages("INBOX", user="privacy")
    assert b"lunar-echoes" in left
    monkeypatch.undo()
    again = await MailboxPoller(intake.settings, inbound).poll_once()  # fixed: handled now
    assert dict(again.outcomes) == {"awaiting_confirmation": 1} and again.left == 0


async def test_a_link_that_could_not_be_mailed_is_mailed_by_the_worker_sweep(
    intake: Intake,
) -> None:
    raw = corpus_case("01-plain-account.eml").raw
    intake.smtp.close()  # the mail server is down; the gateway will not send it again
    assert (await intake.post(raw)).status_code == 503
    (request,) = await intake.requests()
    intake.smtp = SmtpSink()
    settings = intake.settings.model_copy(update={"smtp_url": intake.smtp.url})
    sessions = intake.state.sessionmaker
    try:
        # Within the grace period the sweep leaves it to the intake that is filing it.
        assert await mail_unsent_links(settings, sessions, utcnow(), actor="test") == 0
        later = utcnow() + timedelta(minutes=6)
        assert await mail_unsent_links(settings, sessions, later, actor="test") == 1
        assert [rcpts for rcpts, _ in intake.sent()] == [["mara@lunar-echoes.example"]]
        link = next(w for w in _text(intake.sent()[0][1]).split() if "/deletion-confirm/" in w)
        page = await intake.client.get("/" + link.split("/", 3)[3])
        assert page.status_code == 200  # the new link works
        assert await mail_unsent_links(settings, sessions, later, actor="test") == 0  # once
        assert (await intake.request(request.id)).status == "awaiting_confirmation"
    finally:
        intake.smtp.close()


async def test_a_message_too_large_to_read_is_moved_and_its_sender_told(intake: Intake) -> None:
    raw = corpus_case("17-oversize-2mib.eml").raw
    assert len(raw) > 2_000_000
    assert await intake.poll(raw) == {"too_large": 1}
    (reply,) = intake.sent()
    assert reply[0] == ["mara@lunar-echoes.example"]
    assert "too large to be read" in " ".join(_text(reply[1]).split())
    assert await intake.requests() == []
    assert len(intake.dovecot.list_messages("Processed", user="privacy")) == 1
    assert await intake.poll(raw) == {"duplicate": 1}  # the same message again: no new reply
    assert len(intake.sent()) == 1


async def test_a_sender_failing_dmarc_gets_no_reply_by_either_way_in(intake: Intake) -> None:
    """The From of a message that fails DMARC is likely forged: a reply would be
    backscatter to someone who never wrote. Ignored or too large to read, over HTTP or
    IMAP: no mail at all."""
    forged = b"Authentication-Results: mx.soundops.example; dmarc=fail header.from=x\r\n"
    ignored = corpus_case("31-neither-kind.eml").raw
    assert (await intake.post(forged + ignored)).json()["outcome"] == "ignored"
    again = ignored.replace(b"Message-ID: <", b"Message-ID: <imap-", 1)
    assert await intake.poll(forged + again) == {"ignored": 1}
    large = corpus_case("17-oversize-2mib.eml").raw
    assert await intake.poll(forged + large) == {"too_large": 1}
    assert intake.sent() == []
    # The same messages without the failure are answered (the reply path works).
    assert await intake.poll(large) == {"duplicate": 1}  # handled once, by Message-ID
    fresh = ignored.replace(b"Message-ID: <", b"Message-ID: <pass-", 1)
    assert (await intake.post(fresh)).json()["outcome"] == "ignored"
    assert [rcpts for rcpts, _ in intake.sent()] == [["ola.nordmann@nightferry.example"]]


@pytest.mark.parametrize("shape", ["nested", "side-by-side"])
async def test_a_message_of_twenty_thousand_mime_parts_is_handled_like_any_other(
    intake: Intake, shape: str
) -> None:
    """Only its first parts are read: the owner's request is filed and the link mailed to
    the address on file (side by side: the site named in the text part; nested: the text
    is out of reach, so by the sender on file), never a crash or a timeout."""
    raw = many_parts(shape)
    answer = await intake.post(raw)
    assert answer.status_code == 202, answer.text
    assert answer.json()["outcome"] == "awaiting_confirmation"
    assert [rcpts for rcpts, _ in intake.sent()] == [["mara@lunar-echoes.example"]]
