"""Operator notices (``operator_notices``): one per ``failed`` or ``overdue`` event of a
request's log, made by whoever sees the event first (the unique ``event_id`` lets only
one in), then delivered under a lease by whoever gets to it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.models import (
    NOTIFIED_EVENTS_SQL,
    DeletionEvent,
    DeletionRequest,
    OperatorNotice,
    RequestStatus,
)

# The events that are notified, and the notice each becomes.
NOTIFIED_EVENTS = {"failed": "deletion.failed", "overdue": "deletion.overdue"}
# A request that finished (completed, cancelled) needs no notice of an older event.
_UNFINISHED = [s.value for s in RequestStatus if s not in ("completed", "cancelled")]


class NoticeChanges(TypedDict, total=False):
    """What giving a claimed notice back writes: per channel, and when to try again."""

    email_status: str | None
    webhook_status: str | None
    run_after: datetime | None
    delivered_at: datetime | None


@dataclass(frozen=True)
class UnnotifiedEvent:
    event_id: int
    request_id: uuid.UUID
    event: str  # deletion.failed | deletion.overdue


async def unnotified_events(session: AsyncSession, limit: int = 100) -> list[UnnotifiedEvent]:
    """``failed`` and ``overdue`` events without a notice, of requests that have not
    finished since: for a failed request only its latest ``failed`` event (an operator's
    retry that fails again is a new one)."""
    earlier = aliased(DeletionEvent)
    latest_failed = (
        sa.select(sa.func.max(earlier.id))
        .where(earlier.request_id == DeletionRequest.id, earlier.type == "failed")
        .correlate(DeletionRequest)
        .scalar_subquery()
    )
    noticed = sa.exists().where(OperatorNotice.event_id == DeletionEvent.id)
    query = (
        sa.select(DeletionEvent.id, DeletionEvent.request_id, DeletionEvent.type)
        .join(DeletionRequest, DeletionRequest.id == DeletionEvent.request_id)
        .where(
            sa.text(NOTIFIED_EVENTS_SQL),  # the partial index's predicate, as literals
            DeletionRequest.status.in_(_UNFINISHED),
            sa.or_(
                sa.and_(
                    DeletionEvent.type == "failed",
                    DeletionRequest.status == RequestStatus.failed,
                    DeletionEvent.id == latest_failed,
                ),
                sa.and_(
                    DeletionEvent.type == "overdue",
                    DeletionRequest.overdue_warned_at.is_not(None),
                ),
            ),
            ~noticed,
        )
        .order_by(DeletionEvent.id)
        .limit(limit)
    )
    rows = (await session.execute(query)).all()
    return [UnnotifiedEvent(row[0], row[1], NOTIFIED_EVENTS[row[2]]) for row in rows]


_NOTICES = cast(sa.Table, OperatorNotice.__table__)
_INSERT = {
    "sqlite": sqlite.insert(_NOTICES).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(_NOTICES).on_conflict_do_nothing(),
}


async def add_operator_notice(session: AsyncSession, **values: Any) -> bool:
    """Insert a notice; False, with nothing written, when its event has one already (made
    meanwhile by another worker)."""
    dialect = (await session.connection()).dialect.name
    statement = _INSERT[dialect].values(**values).returning(OperatorNotice.id)
    return (await session.execute(statement)).first() is not None


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        OperatorNotice.run_after.is_not(None),
        OperatorNotice.run_after <= now,
        sa.or_(OperatorNotice.lease_expires_at.is_(None), OperatorNotice.lease_expires_at < now),
    )


async def due_operator_notices(
    session: AsyncSession, now: datetime, limit: int = 100
) -> list[uuid.UUID]:
    query = (
        sa.select(OperatorNotice.id)
        .where(_due(now))
        .order_by(OperatorNotice.run_after)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def claim_operator_notice(
    session: AsyncSession, notice_id: uuid.UUID, owner: str, now: datetime, lease: timedelta
) -> OperatorNotice | None:
    """Take one due notice under a lease (a conditional UPDATE: of several workers exactly
    one wins), commit, and return it; None when another holds it or it is done."""
    result = await session.execute(
        sa.update(OperatorNotice)
        .where(OperatorNotice.id == notice_id, _due(now))
        .values(
            lease_owner=owner,
            lease_expires_at=now + lease,
            attempts=OperatorNotice.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        await session.rollback()
        return None
    await session.commit()
    return await session.get(OperatorNotice, notice_id, populate_existing=True)


async def finish_operator_notice(
    session: AsyncSession, notice_id: uuid.UUID, owner: str, values: NoticeChanges
) -> bool:
    """Give a claimed notice back with ``values``, only while ``owner`` still holds it (the
    caller commits, with the events that say what happened)."""
    result = await session.execute(
        sa.update(OperatorNotice)
        .where(OperatorNotice.id == notice_id, OperatorNotice.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def failure_notice_delivered(session: AsyncSession, request_id: uuid.UUID) -> bool:
    """Whether the notice of the request's latest failure reached an operator (by at least
    one channel)."""
    latest_failed = (
        sa.select(sa.func.max(DeletionEvent.id))
        .where(DeletionEvent.request_id == request_id, DeletionEvent.type == "failed")
        .scalar_subquery()
    )
    query = sa.select(sa.literal(1)).where(
        OperatorNotice.request_id == request_id,
        OperatorNotice.event_id == latest_failed,
        sa.or_(OperatorNotice.email_status == "sent", OperatorNotice.webhook_status == "sent"),
    )
    return (await session.execute(query.limit(1))).first() is not None
