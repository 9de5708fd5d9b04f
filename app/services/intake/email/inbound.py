"""The privacy@ mailbox: one raw e-mail in, at most one request filed, never a deletion.

The same handling serves both ways in (``POST /v1/inbound-email`` and ``mailbox poll``):

1. parse (``parse``, off the event loop); nothing of the message is stored;
2. a Message-ID handled before -> ``duplicate`` (if its request still awaits confirmation
   and the link was never mailed, e.g. SMTP was down, the link is mailed now);
3. neither subject line -> ``ignored``: one short explanatory reply, except to automatic
   senders, to messages failing DMARC, and at most once a day per address;
4. otherwise the names in the message are matched against the SoundOps database, and the
   request is filed ``awaiting_confirmation`` (a one-time link goes to the address on
   file, never to the sender's ``Reply-To``) or ``needs_review`` with a reason code.
   A ``meta_data`` request naming a username that no connection has, but that wrote
   comments or messages here (a fan: nobody is on file to confirm), is reviewed as
   ``third_party_only`` (``writers``: one equality look-up with limit 1 per collection);
   when MongoDB cannot answer that look-up in time, as ``third_party_unchecked`` (filed
   all the same: the message is not held back); with no MongoDB in the deployment, or no
   writing found, as ``no_match``. The reviewer's preview counts that data as
   ``as_third_party``; approving either ``third_party_*`` review without a choice pins
   the request to no connection, so it reaches only what the named person wrote.

Raises ``ServiceUnavailable`` when the tracking or SoundOps database, or the SMTP server
for a link, cannot be reached: the caller retries the same message later, and the
Message-ID makes that safe.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import metrics, repository
from app.datamap import Selection
from app.errors import Conflict, ProblemError, ServiceUnavailable, Unprocessable
from app.models import DeletionRequest, RequestKind, RequestStatus, utcnow
from app.names import normalise_as
from app.pii import keyed_hash
from app.services.evidence.notices import DeliveryFailed, send_email
from app.services.intake.email import filing, links, replies
from app.services.intake.email.parse import MailKind, ParsedMail, parse_message
from app.services.intake.email.writers import Writers, WritersUnavailable
from app.services.target import NamedTenant, TargetDirectory, TargetUnavailable, selection_of
from app.settings import Settings
from app.subjects import Review, ReviewCandidate, validated_subject

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 1_048_576
REPLY_PERIOD = timedelta(days=1)
_USERNAME = re.compile(r"^[A-Za-z0-9._]{1,30}$")


class Outcome(StrEnum):
    awaiting_confirmation = "awaiting_confirmation"
    needs_review = "needs_review"
    duplicate = "duplicate"
    ignored = "ignored"
    too_large = "too_large"


@dataclass(frozen=True)
class InboundResult:
    outcome: Outcome
    request_id: uuid.UUID | None = None
    replied: bool = False


@dataclass(frozen=True)
class Decision:
    """What a message asks for, once matched: never personal data in ``reason``."""

    status: RequestStatus  # awaiting_confirmation or needs_review
    subject: dict[str, str]
    recipients: list[str]
    reason: str | None = None
    # What the confirmation shows and carries (awaiting_confirmation only).
    pinned: Selection | None = None
    # What the message named (as written) and what it matched: shown to the reviewer.
    review: Review | None = None


class InboundMail:
    """Handles one raw message; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        target: TargetDirectory | None,
        writers: Writers | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessionmaker
        self._target = target
        self._writers = writers or Writers(None)

    async def handle(self, raw: bytes, *, via: str, oversize: bool = False) -> InboundResult:
        """``oversize``: ``raw`` holds only the headers of a message over the size limit
        (the IMAP poller does not download the rest); it is recorded as ``too_large``."""
        try:
            result = await self._handle(raw, oversize)
        except ProblemError:
            metrics.INBOUND_MESSAGES.labels(outcome="error", via=via).inc()
            raise
        except (DBAPIError, OSError, TimeoutError) as exc:
            metrics.INBOUND_MESSAGES.labels(outcome="error", via=via).inc()
            raise ServiceUnavailable(
                "The tracking database is unavailable; send the message again later."
            ) from exc
        except Exception:
            metrics.INBOUND_MESSAGES.labels(outcome="error", via=via).inc()
            raise
        metrics.INBOUND_MESSAGES.labels(outcome=result.outcome.value, via=via).inc()
        log.info(
            "inbound_email",
            via=via,
            outcome=result.outcome.value,
            request_id=str(result.request_id) if result.request_id else None,
            replied=result.replied,
        )
        return result

    async def _handle(self, raw: bytes, oversize: bool) -> InboundResult:
        settings = self._settings
        mail = await asyncio.to_thread(
            parse_message,
            raw,
            authserv_id=settings.email_authserv_id,
            max_bytes=MAX_MESSAGE_BYTES,
        )
        if mail.oversize or oversize:
            # Not read, so it may have been a request: the sender learns that it was not
            # (the same reply rules as for an ignored message), and the metric counts it.
            if not await self._record(mail, Outcome.too_large):
                return InboundResult(Outcome.duplicate)
            replied = await self._reply(mail, too_large=True)
            return InboundResult(Outcome.too_large, replied=replied)
        async with self._sessions() as session:
            intake = await repository.get_email_intake(
                session, filing.message_id_hash(settings, mail.message_id)
            )
            await session.commit()
        if intake is not None:
            if intake.request_id is not None:
                await self._mail_link_if_never_sent(intake.request_id)
            return InboundResult(Outcome.duplicate, intake.request_id)
        if mail.kind is None:
            return await self._ignore(mail)
        decision = await self._decide(mail)
        if decision is None:
            return await self._ignore(mail)
        async with self._sessions() as session:
            try:
                filed = await filing.file_email_request(
                    session,
                    kind=RequestKind(mail.kind.value),
                    subject=decision.subject,
                    status=decision.status.value,  # type: ignore[arg-type]
                    review_reason=decision.reason,
                    message_id=mail.message_id,
                    recipients=decision.recipients,
                    settings=settings,
                    pinned=decision.pinned,
                    review=decision.review if decision.reason is not None else None,
                    notify_email=_completion_address(mail, decision),
                )
            except Conflict:  # the same message, handled concurrently
                return InboundResult(Outcome.duplicate)
        request = filed.request
        if not filed.created:
            await self._mail_link_if_never_sent(request.id)
            return InboundResult(Outcome.duplicate, request.id)
        if filed.token is not None:
            await self._mail_link(request, filed.token)
        return InboundResult(Outcome(request.status), request.id)

    # --- matching ---------------------------------------------------------------------

    async def _decide(self, mail: ParsedMail) -> Decision | None:
        if self._target is None:
            raise ServiceUnavailable(
                "E-mail intake needs the SoundOps database (DELETION_TARGET_POSTGRES_URL) "
                "to find the address on file."
            )
        try:
            if mail.kind is MailKind.account:
                decision = await self._decide_account(mail, self._target)
            else:
                decision = await self._decide_meta(mail, self._target)
        except TargetUnavailable as exc:
            raise ServiceUnavailable(
                "The SoundOps database is unavailable; send the message again later."
            ) from exc
        if decision is not None and mail.dmarc_fail:
            return Decision(
                RequestStatus.needs_review,
                decision.subject,
                [],
                "dmarc_fail",
                review=decision.review,
            )
        return decision

    async def _decide_account(self, mail: ParsedMail, target: TargetDirectory) -> Decision | None:
        found = await target.tenants_by("site_name", list(mail.candidates), normalised=True)
        written, named = _first_matches("site_name", mail.candidates, found)
        if not named and mail.sender is not None:
            written = mail.sender
            named = await target.tenants_by("owner_email", [mail.sender], normalised=True)
        if not named:
            return _fallback_review(RequestKind.account, mail)
        return _decided(mail, named[0].identity, written, named)

    async def _decide_meta(self, mail: ParsedMail, target: TargetDirectory) -> Decision | None:
        found: list[NamedTenant] = []
        for identity in ("ig_username", "facebook_page_name"):
            found += await target.tenants_by(identity, list(mail.candidates), normalised=True)
        written, named = _first_matches(None, mail.candidates, found)
        if not named:
            return await self._writer_review(mail) or _fallback_review(RequestKind.meta_data, mail)
        return _decided(mail, named[0].identity, written, named)

    async def _writer_review(self, mail: ParsedMail) -> Decision | None:
        """Nobody on file: a username that wrote here is a third-party data subject's
        request (``third_party_only``); None when no username wrote anything."""
        usernames = [
            value for c in mail.candidates if _USERNAME.match(value := c.removeprefix("@"))
        ]
        if not usernames:
            return None
        try:
            writer = await self._writers.first_writer(usernames)
            reason = "third_party_only"
        except WritersUnavailable:
            writer, reason = usernames[0], "third_party_unchecked"
        if writer is None:
            return None
        return _review({"ig_username": writer}, reason, Review(named={"ig_username": writer}))

    # --- mail -------------------------------------------------------------------------

    async def _mail_link(self, request: DeletionRequest, token: str) -> None:
        try:
            await links.mail_link(self._settings, self._sessions, request, token)
        except DeliveryFailed as exc:
            log.warning("confirmation_not_sent", request_id=str(request.id), error=str(exc))
            raise ServiceUnavailable(
                "The request is filed but its confirmation could not be mailed; send the "
                "message again later (it will not be filed twice)."
            ) from exc

    async def _mail_link_if_never_sent(self, request_id: uuid.UUID) -> None:
        """After a failure between filing and mailing: mail a fresh link now."""
        try:
            await links.mail_if_never_sent(self._settings, self._sessions, request_id)
        except DeliveryFailed as exc:
            log.warning("confirmation_not_sent", request_id=str(request_id), error=str(exc))
            raise ServiceUnavailable(
                "The confirmation could not be mailed; send the message again later."
            ) from exc

    async def _ignore(self, mail: ParsedMail) -> InboundResult:
        if not await self._record(mail, Outcome.ignored):
            return InboundResult(Outcome.duplicate)
        return InboundResult(Outcome.ignored, replied=await self._reply(mail))

    async def _record(self, mail: ParsedMail, outcome: Outcome) -> bool:
        """Record a message that files nothing; False when it was handled before."""
        async with self._sessions() as session:
            return await filing.record_email(
                session, message_id=mail.message_id, outcome=outcome.value, settings=self._settings
            )

    async def _reply(self, mail: ParsedMail, *, too_large: bool = False) -> bool:
        """The one explanatory reply: never to automatic senders, to mail that failed
        DMARC or to no address; at most once a day per address."""
        settings = self._settings
        if mail.automatic or mail.dmarc_fail or mail.sender is None or not settings.smtp_url:
            why = "automatic" if mail.automatic else "not_sent"
            metrics.INBOUND_REPLIES.labels(result=why).inc()
            return False
        address_hash = keyed_hash(settings.effective_hash_key, f"reply-to={mail.sender}")
        async with self._sessions() as session:
            allowed = await repository.take_reply_slot(
                session, address_hash, utcnow(), REPLY_PERIOD
            )
        if not allowed:
            metrics.INBOUND_REPLIES.labels(result="rate_limited").inc()
            return False
        headers = {"Auto-Submitted": "auto-replied"}
        if mail.message_id_present:
            headers["In-Reply-To"] = f"<{mail.message_id}>"
        try:
            text = replies.reply_text(too_large)
            await send_email(settings, mail.sender, replies.REPLY_SUBJECT, text, headers=headers)
        except DeliveryFailed as exc:
            log.warning("inbound_reply_not_sent", error=str(exc))
            metrics.INBOUND_REPLIES.labels(result="failed").inc()
            return False
        metrics.INBOUND_REPLIES.labels(result="sent").inc()
        return True


def _first_matches(
    identity: str | None, candidates: Sequence[str], found: list[NamedTenant]
) -> tuple[str, list[NamedTenant]]:
    """The best candidate (as written) that matched anything, and its matches (candidates
    are best first; both compared after the one normalisation). ``identity``: only
    matches of that identity (None: any)."""
    for candidate in candidates:
        matches = [
            n
            for n in found
            if (identity is None or n.identity == identity)
            and normalise_as(n.identity, n.value) == normalise_as(n.identity, candidate)
        ]
        if matches:
            # One identity per request: the first that matched (usernames before Pages).
            first = matches[0].identity
            return candidate, [n for n in matches if n.identity == first]
    return "", []


def _decided(mail: ParsedMail, identity: str, written: str, named: list[NamedTenant]) -> Decision:
    """What the matches of the best candidate decide.

    A sender who is the owner on file of exactly one matching tenant: a link to that
    address, pinned to that tenant and its matching accounts. Otherwise several tenants
    (or, within one, several Pages of that name) need an operator's choice; one tenant
    whose owner is not the sender needs review too.
    """
    review = Review(
        named={identity: written},
        candidates=[ReviewCandidate.model_validate(n.candidate()) for n in named],
    )
    sender = mail.sender.casefold() if mail.sender is not None else None
    owned = [n for n in named if n.owner_email and n.owner_email.casefold() == sender]
    chosen = owned if len({n.tenant_id for n in owned}) == 1 else named
    tenant = chosen[0]
    several = len({n.tenant_id for n in chosen}) > 1
    if identity not in ("site_name", "owner_email"):
        subject = {identity: tenant.value}
    elif several:
        subject = {identity: written}  # the site name or the sender's address
    else:
        subject = {"tenant_id": str(tenant.tenant_id)}
    if several:
        return _review(subject, "several_tenants", review)
    if identity == "facebook_page_name" and len({n.facebook_page_id for n in chosen}) > 1:
        return _review(subject, "several_pages", review)
    if chosen is not owned:
        return _review(subject, "sender_not_on_file", review)
    assert tenant.owner_email is not None
    return Decision(
        RequestStatus.awaiting_confirmation,
        subject,
        [tenant.owner_email],
        pinned=selection_of(chosen),
        review=review,
    )


def _completion_address(mail: ParsedMail, decision: Decision) -> str | None:
    """A request in review comes from its sender: once an operator approved it, the
    completion e-mail goes to that address too (a link's request goes to the address on
    file that confirmed it). Never to a sender that failed DMARC: a forged From."""
    if decision.status is not RequestStatus.needs_review or mail.dmarc_fail:
        return None
    return mail.sender if mail.sender is not None and len(mail.sender) <= 254 else None


def _review(subject: dict[str, str], reason: str, review: Review | None = None) -> Decision:
    return Decision(RequestStatus.needs_review, subject, [], reason, review=review)


def _fallback_review(kind: RequestKind, mail: ParsedMail) -> Decision | None:
    """Nothing on file matched: a request for an operator, on the first candidate that
    is a valid identity of the kind (or the sender's address for an account); None when
    the message names nothing usable at all."""
    options: list[dict[str, str]] = []
    for candidate in mail.candidates:
        value = candidate.removeprefix("@")
        if kind is RequestKind.account:
            options.append({"site_name": value})
        elif _USERNAME.match(value):
            options.append({"ig_username": value})
        else:
            options.append({"facebook_page_name": value})
    if kind is RequestKind.account and mail.sender is not None:
        options.append({"owner_email": mail.sender})
    for subject in options:
        try:
            validated_subject(kind, subject)
        except Unprocessable:
            continue
        ((identity, written),) = subject.items()
        return _review(subject, "no_match", Review(named={identity: written}))
    return None
