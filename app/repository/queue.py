"""The work queue over ``deletion_requests``: claim under a lease, heartbeat, fence,
release, and how deep the queue is."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Unpack

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import (
    DeletionRequest,
    RequestStatus,
    utcnow,
)
from app.repository.requests import RequestChanges


@dataclass(frozen=True)
class Claim:
    request_id: uuid.UUID
    previous_owner: str | None
    was_pending: bool


# Statuses with work for a worker: carrying out the deletion, or (once finished)
# sending its confirmations and minimising what it keeps.
WORKABLE = (
    RequestStatus.pending,
    RequestStatus.running,
    RequestStatus.completed,
    RequestStatus.cancelled,
)


def _claimable(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        DeletionRequest.status.in_(WORKABLE),
        DeletionRequest.run_after.is_not(None),
        DeletionRequest.run_after <= now,
        sa.or_(DeletionRequest.lease_expires_at.is_(None), DeletionRequest.lease_expires_at < now),
    )


async def claim_next(
    session: AsyncSession, worker_id: str, lease: timedelta, now: datetime
) -> Claim | None:
    """Take the next due request under a lease, or None.

    On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets workers pass each other's
    candidates; the conditional UPDATE makes the claim safe on SQLite too.
    """
    candidate = (
        await session.execute(
            sa.select(DeletionRequest.id, DeletionRequest.lease_owner, DeletionRequest.status)
            .where(_claimable(now))
            .order_by(DeletionRequest.run_after, DeletionRequest.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
    ).first()
    if candidate is None:
        return None
    request_id, previous_owner, status = candidate
    result = await session.execute(
        sa.update(DeletionRequest)
        .where(DeletionRequest.id == request_id, _claimable(now))
        .values(
            # pending -> running; finished requests keep their status (confirmations).
            status=sa.case(
                (DeletionRequest.status == RequestStatus.pending, RequestStatus.running.value),
                else_=DeletionRequest.status,
            ),
            lease_owner=worker_id,
            lease_expires_at=now + lease,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    return Claim(request_id, previous_owner, status == RequestStatus.pending)


async def extend_lease(
    session: AsyncSession, request_id: uuid.UUID, worker_id: str, until: datetime
) -> bool:
    """Heartbeat: push the lease further, only while this worker still holds it."""
    result = await session.execute(
        sa.update(DeletionRequest)
        .where(DeletionRequest.id == request_id, DeletionRequest.lease_owner == worker_id)
        .values(lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def holds_lease(
    session: AsyncSession, request_id: uuid.UUID, worker_id: str, now: datetime
) -> bool:
    """Fencing check, inside the transaction that writes a task's outcome."""
    row = (
        await session.execute(
            sa.select(DeletionRequest.id)
            .where(
                DeletionRequest.id == request_id,
                DeletionRequest.lease_owner == worker_id,
                DeletionRequest.lease_expires_at > now,
            )
            .with_for_update()
        )
    ).first()
    return row is not None


async def release(
    session: AsyncSession,
    request_id: uuid.UUID,
    worker_id: str,
    **values: Unpack[RequestChanges],
) -> bool:
    """Give the request back (with its new status and next run time), if still ours."""
    result = await session.execute(
        sa.update(DeletionRequest)
        .where(DeletionRequest.id == request_id, DeletionRequest.lease_owner == worker_id)
        .values(lease_owner=None, lease_expires_at=None, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def queue_depth(session: AsyncSession, now: datetime) -> int:
    result = await session.scalar(
        sa.select(sa.func.count()).select_from(DeletionRequest).where(_claimable(now))
    )
    return int(result or 0)
