"""Requests by e-mail: messages handled once (``email_intake``), one-time confirmation
links, expiry of unconfirmed and unreviewed requests, and the automatic-reply slots
(``email_replies``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import (
    DeletionEvent,
    DeletionRequest,
    EmailIntake,
    EmailReply,
    RequestStatus,
)


async def get_request_by_confirm_token_hash(
    session: AsyncSession, token_hash: str
) -> DeletionRequest | None:
    result = await session.execute(
        sa.select(DeletionRequest)
        .where(DeletionRequest.confirm_token_hash == token_hash)
        .execution_options(populate_existing=True)
    )
    return result.scalar_one_or_none()


async def get_email_intake(session: AsyncSession, message_id_hash: str) -> EmailIntake | None:
    return await session.get(EmailIntake, message_id_hash, populate_existing=True)


def add_email_intake(
    session: AsyncSession,
    message_id_hash: str,
    *,
    request_id: uuid.UUID | None,
    outcome: str,
    now: datetime,
) -> None:
    session.add(
        EmailIntake(
            message_id_hash=message_id_hash, request_id=request_id, outcome=outcome, received_at=now
        )
    )


async def confirm_request(
    session: AsyncSession, request_id: uuid.UUID, token_hash: str, now: datetime
) -> bool:
    """awaiting_confirmation -> pending, only with this request's unexpired link: of two
    concurrent confirmations exactly one changes the row."""
    result = await session.execute(
        sa.update(DeletionRequest)
        .where(
            DeletionRequest.id == request_id,
            DeletionRequest.status == RequestStatus.awaiting_confirmation,
            DeletionRequest.confirm_token_hash == token_hash,
            DeletionRequest.confirm_expires_at > now,
        )
        .values(status=RequestStatus.pending, confirmed_at=now, run_after=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def set_confirm_token(
    session: AsyncSession, request_id: uuid.UUID, token_hash: str, now: datetime
) -> bool:
    """A new link for a request still waiting for confirmation (the old one stops working)."""
    result = await session.execute(
        sa.update(DeletionRequest)
        .where(
            DeletionRequest.id == request_id,
            DeletionRequest.status == RequestStatus.awaiting_confirmation,
            DeletionRequest.confirm_expires_at > now,
        )
        .values(confirm_token_hash=token_hash, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def expire_confirmations(
    session: AsyncSession, now: datetime, reason: str
) -> Sequence[uuid.UUID]:
    """Cancel every request whose confirmation link has expired unused; their ids."""
    return await _cancel_unverified(
        session,
        sa.and_(
            DeletionRequest.status == RequestStatus.awaiting_confirmation,
            DeletionRequest.confirm_expires_at <= now,
        ),
        now,
        reason,
        confirm_recipients=None,
    )


async def expire_reviews(
    session: AsyncSession, filed_before: datetime, now: datetime, reason: str
) -> Sequence[uuid.UUID]:
    """Cancel every request still in review that was filed before ``filed_before``; ids."""
    return await _cancel_unverified(
        session,
        sa.and_(
            DeletionRequest.status == RequestStatus.needs_review,
            DeletionRequest.created_at <= filed_before,
        ),
        now,
        reason,
    )


async def _cancel_unverified(
    session: AsyncSession,
    which: sa.ColumnElement[bool],
    now: datetime,
    reason: str,
    **also: None,
) -> Sequence[uuid.UUID]:
    result = await session.execute(
        sa.update(DeletionRequest)
        .where(which)
        .values(
            status=RequestStatus.cancelled,
            status_reason=reason,
            # A worker then minimises what the request keeps.
            run_after=now,
            updated_at=now,
            **also,
        )
        .returning(DeletionRequest.id)
        .execution_options(synchronize_session=False)
    )
    return result.scalars().all()


async def take_reply_slot(
    session: AsyncSession, address_hash: str, now: datetime, period: timedelta
) -> bool:
    """Claim the right to send one automatic reply to an address now: True at most once per
    ``period`` per address, also when several handlers race (insert, else a conditional
    update of an older slot). Commits."""
    session.add(EmailReply(address_hash=address_hash, last_sent_at=now))
    try:
        await session.commit()
        return True
    except IntegrityError:
        await session.rollback()
    result = await session.execute(
        sa.update(EmailReply)
        .where(EmailReply.address_hash == address_hash, EmailReply.last_sent_at <= now - period)
        .values(last_sent_at=now)
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def unsent_confirmations(
    session: AsyncSession, created_before: datetime, sent_event: str, limit: int = 100
) -> list[uuid.UUID]:
    """Requests awaiting confirmation, filed before ``created_before``, whose link was
    never recorded as sent."""
    sent = sa.select(sa.literal(1)).where(
        DeletionEvent.request_id == DeletionRequest.id, DeletionEvent.type == sent_event
    )
    query = (
        sa.select(DeletionRequest.id)
        .where(
            DeletionRequest.status == RequestStatus.awaiting_confirmation,
            DeletionRequest.created_at < created_before,
            ~sa.exists(sent),
        )
        .order_by(DeletionRequest.created_at)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())
