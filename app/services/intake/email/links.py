"""The one-time link of a request filed from e-mail: its token, its states, the
confirmation it carries, its expiry, and mailing it (also when intake could not).

The link's token is 256 random bits. Only its keyed hash is stored (``filing``), found by
that hash and compared in constant time; it works once (a conditional UPDATE) and
expires. The hash stays after use, so that a used or expired link still answers "used"
or "expired" rather than "unknown". The functions that take a session commit it (or roll
it back), as in ``filing``.
"""

from __future__ import annotations

import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import metrics, repository
from app.errors import Conflict
from app.models import EXPIRED_REASON, DeletionRequest, RequestKind, RequestStatus, utcnow
from app.services.evidence.notices import DeliveryFailed
from app.services.intake.email.filing import REQUESTED_BY, close_as_duplicate, confirm_token_hash
from app.services.intake.email.replies import send_confirmation_link
from app.settings import Settings

log = structlog.get_logger(__name__)

CONFIRM_PATH = "/deletion-confirm/"
# secrets.token_urlsafe(32) gives 43 characters; anything else is not one of ours.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
LinkState = Literal["valid", "used", "expired", "cancelled", "unknown"]
ConfirmResult = Literal["confirmed", "used", "expired", "cancelled", "unknown"]


@dataclass(frozen=True)
class ConfirmOutcome:
    outcome: ConfirmResult
    request: DeletionRequest | None = None


def confirmation_link(settings: Settings, token: str) -> str:
    return f"{settings.public_base_url}{CONFIRM_PATH}{token}"


async def reissue_confirmation(
    session: AsyncSession, request_id: uuid.UUID, *, settings: Settings
) -> str | None:
    """A new one-time token for a request still awaiting confirmation (the old link stops
    working; the expiry stays). None when the request no longer awaits confirmation —
    e.g. to mail the link again after a crash between filing and mailing."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    if not await repository.set_confirm_token(
        session, request_id, confirm_token_hash(settings, token), now
    ):
        await session.rollback()
        return None
    repository.add_event(session, request_id, "confirmation_reissued", actor=REQUESTED_BY)
    await session.commit()
    return token


async def by_token(
    session: AsyncSession, token: str, settings: Settings
) -> tuple[DeletionRequest | None, str]:
    if not _TOKEN.match(token):
        return None, ""
    token_hash = confirm_token_hash(settings, token)
    request = await repository.get_request_by_confirm_token_hash(session, token_hash)
    if (
        request is None
        or request.confirm_token_hash is None
        or not hmac.compare_digest(request.confirm_token_hash, token_hash)
    ):
        return None, token_hash
    return request, token_hash


def link_state(request: DeletionRequest, now: datetime) -> LinkState:
    if request.confirmed_at is not None:
        return "used"
    if request.status == RequestStatus.awaiting_confirmation:
        expires = request.confirm_expires_at
        return "valid" if expires is not None and expires > now else "expired"
    if request.status == RequestStatus.cancelled and request.status_reason == EXPIRED_REASON:
        return "expired"
    return "cancelled"  # rejected or cancelled by an operator before confirmation


async def confirm(session: AsyncSession, token: str, *, settings: Settings) -> ConfirmOutcome:
    """The POST from the link's page: awaiting_confirmation -> pending, once.

    Of concurrent confirmations exactly one wins; the others answer ``used``. A used,
    expired, cancelled or unknown link changes nothing. When a verified request for the
    same subject is open already (filed by REST or Meta meanwhile), this one is closed as
    its duplicate and the outcome carries the open one. The caller wakes the worker.
    """
    request, token_hash = await by_token(session, token, settings)
    if request is None:
        await session.rollback()
        return ConfirmOutcome("unknown")
    # The object expires with a rollback: keep what is needed.
    request_id, kind, key = request.id, RequestKind(request.kind), request.subject_key
    now = utcnow()
    for _ in range(3):
        try:
            confirmed = await repository.confirm_request(session, request_id, token_hash, now)
        except IntegrityError:  # a verified request for the subject is open
            await session.rollback()
            duplicate_of = await close_as_duplicate(
                session,
                request_id,
                RequestStatus.awaiting_confirmation,
                kind,
                key,
                actor="email-link",
                values={"confirmed_at": now},
            )
            if duplicate_of is None:
                continue  # it closed in between, or this one changed: look again
            metrics.CONFIRMATIONS_CONFIRMED.inc()
            return ConfirmOutcome("confirmed", duplicate_of)
        break
    else:
        raise Conflict("The request could not be confirmed (concurrent changes); try again.")
    if confirmed:
        repository.add_event(session, request_id, "confirmed", actor="email-link")
        await session.commit()
        metrics.CONFIRMATIONS_CONFIRMED.inc()
        log.info("email_request_confirmed", request_id=str(request_id))
        confirmed_request = await repository.get_request_fresh(session, request_id)
        await session.commit()
        return ConfirmOutcome("confirmed", confirmed_request)
    await session.rollback()
    current = await repository.get_request_fresh(session, request_id)
    await session.commit()
    assert current is not None
    state = link_state(current, now)
    return ConfirmOutcome("used" if state == "valid" else state, current)


async def expire_confirmations(
    session: AsyncSession, now: datetime, *, actor: str = "system"
) -> int:
    """Cancel requests whose link expired unconfirmed (reason recorded); how many."""
    expired = await repository.expire_confirmations(session, now, EXPIRED_REASON)
    for request_id in expired:
        repository.add_event(session, request_id, "confirmation_expired", actor=actor)
    await session.commit()
    if expired:
        metrics.CONFIRMATIONS_EXPIRED.inc(len(expired))
        log.info("email_confirmations_expired", count=len(expired))
    return len(expired)


CONFIRMATION_SENT = "confirmation_sent"
# How old an unmailed link must be before a worker mails it: the intake that filed the
# request is then surely not still sending it.
UNSENT_GRACE = timedelta(minutes=5)


async def mail_link(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    request: DeletionRequest,
    token: str,
    *,
    actor: str = REQUESTED_BY,
) -> None:
    """Mail the one-time link to every address on file of the request, then record that it
    went (event ``confirmation_sent``). Raises ``DeliveryFailed``: nothing is recorded, so
    it is mailed again later (a new link then; this one stops working)."""
    link = confirmation_link(settings, token)
    for address in request.confirm_recipients or []:
        await send_confirmation_link(
            settings, address, link, request.kind, expires_at=request.confirm_expires_at
        )
    async with sessionmaker() as session:
        repository.add_event(session, request.id, CONFIRMATION_SENT, actor=actor)
        await session.commit()


async def mail_if_never_sent(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    request_id: uuid.UUID,
    *,
    actor: str = REQUESTED_BY,
) -> bool:
    """For a request still awaiting confirmation whose link never went out (SMTP was down
    when it was filed): a fresh link, mailed now. False when there was nothing to do."""
    async with sessionmaker() as session:
        request = await repository.get_request_fresh(session, request_id)
        sent = await repository.has_event(session, request_id, CONFIRMATION_SENT)
        await session.commit()
    if request is None or request.status != RequestStatus.awaiting_confirmation or sent:
        return False
    async with sessionmaker() as session:
        token = await reissue_confirmation(session, request_id, settings=settings)
    if token is None:
        return False
    await mail_link(settings, sessionmaker, request, token, actor=actor)
    return True


async def mail_unsent_links(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    now: datetime,
    *,
    actor: str,
) -> int:
    """The worker's sweep: mail the links that intake filed but could not mail (and whose
    message was not delivered again). Stops at the first delivery failure."""
    if not settings.smtp_url:
        return 0
    async with sessionmaker() as session:
        waiting = await repository.unsent_confirmations(
            session, now - UNSENT_GRACE, CONFIRMATION_SENT
        )
        await session.commit()
    mailed = 0
    for request_id in waiting:
        try:
            mailed += await mail_if_never_sent(settings, sessionmaker, request_id, actor=actor)
        except DeliveryFailed as exc:
            log.warning("confirmation_not_sent", request_id=str(request_id), error=str(exc))
            break
    return mailed
