"""All SQL over the service's own tables lives here."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import (
    OPEN_STATUSES,
    DeletionEvent,
    DeletionRequest,
    DeletionTask,
    RequestKind,
    RequestStatus,
    SubjectHash,
    TaskStatus,
    utcnow,
)


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class RequestFilter:
    status: RequestStatus | None = None
    kind: RequestKind | None = None
    overdue: bool = False
    subject_hash: str | None = None


def encode_cursor(request: DeletionRequest) -> str:
    raw = f"{request.created_at.isoformat()}|{request.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, request_id = raw.split("|", 1)
        return datetime.fromisoformat(created), uuid.UUID(request_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this service issued") from exc


async def get_request(session: AsyncSession, request_id: uuid.UUID) -> DeletionRequest | None:
    return await session.get(DeletionRequest, request_id)


async def get_request_by_code(session: AsyncSession, code: str) -> DeletionRequest | None:
    result = await session.execute(
        sa.select(DeletionRequest).where(DeletionRequest.confirmation_code == code)
    )
    return result.scalar_one_or_none()


async def get_request_by_idempotency_key(
    session: AsyncSession, requested_by: str, key: str
) -> DeletionRequest | None:
    result = await session.execute(
        sa.select(DeletionRequest).where(
            DeletionRequest.requested_by == requested_by,
            DeletionRequest.idempotency_key == key,
        )
    )
    return result.scalar_one_or_none()


async def get_open_request_for_subject(
    session: AsyncSession, kind: RequestKind, subject_key: str
) -> DeletionRequest | None:
    result = await session.execute(
        sa.select(DeletionRequest).where(
            DeletionRequest.kind == kind,
            DeletionRequest.subject_key == subject_key,
            DeletionRequest.status.in_(OPEN_STATUSES),
        )
    )
    return result.scalar_one_or_none()


async def list_requests(
    session: AsyncSession,
    filters: RequestFilter,
    *,
    limit: int,
    cursor: str | None = None,
    now: datetime | None = None,
) -> tuple[Sequence[DeletionRequest], str | None]:
    query = sa.select(DeletionRequest)
    if filters.status is not None:
        query = query.where(DeletionRequest.status == filters.status)
    if filters.kind is not None:
        query = query.where(DeletionRequest.kind == filters.kind)
    if filters.overdue:
        query = query.where(
            DeletionRequest.status.in_(OPEN_STATUSES), DeletionRequest.due_at < (now or utcnow())
        )
    if filters.subject_hash is not None:
        query = query.where(
            DeletionRequest.id.in_(
                sa.select(SubjectHash.request_id).where(SubjectHash.hash == filters.subject_hash)
            )
        )
    if cursor:
        created, request_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                DeletionRequest.created_at < created,
                sa.and_(DeletionRequest.created_at == created, DeletionRequest.id < request_id),
            )
        )
    query = query.order_by(DeletionRequest.created_at.desc(), DeletionRequest.id.desc())
    rows = (await session.execute(query.limit(limit + 1))).scalars().all()
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def transition_request(
    session: AsyncSession,
    request_id: uuid.UUID,
    *,
    from_statuses: frozenset[RequestStatus],
    to_status: RequestStatus,
    values: dict[str, Any] | None = None,
) -> bool:
    """Change a request's status only if it is still in one of ``from_statuses``.

    A conditional UPDATE, so that two actors (an operator cancelling, a worker
    claiming) can never both win.
    """
    result = await session.execute(
        sa.update(DeletionRequest)
        .where(DeletionRequest.id == request_id, DeletionRequest.status.in_(from_statuses))
        .values(status=to_status, updated_at=utcnow(), **(values or {}))
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def add_event(
    session: AsyncSession,
    request_id: uuid.UUID,
    type_: str,
    *,
    actor: str | None = None,
    purger: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        DeletionEvent(
            request_id=request_id,
            type=type_,
            actor=actor,
            purger=purger,
            detail=detail or {},
            at=utcnow(),
        )
    )


async def list_events(session: AsyncSession, request_id: uuid.UUID) -> Sequence[DeletionEvent]:
    result = await session.execute(
        sa.select(DeletionEvent)
        .where(DeletionEvent.request_id == request_id)
        .order_by(DeletionEvent.id)
    )
    return result.scalars().all()


def new_task(purger: str, position: int, after: list[str]) -> DeletionTask:
    return DeletionTask(purger=purger, position=position, after=after, deleted={}, retained={})


# --- the work queue ---------------------------------------------------------------


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


async def get_tasks(session: AsyncSession, request_id: uuid.UUID) -> Sequence[DeletionTask]:
    result = await session.execute(
        sa.select(DeletionTask)
        .where(DeletionTask.request_id == request_id)
        .order_by(DeletionTask.position)
    )
    return result.scalars().all()


async def reset_failed_tasks(session: AsyncSession, request_id: uuid.UUID) -> list[str]:
    result = await session.execute(
        sa.update(DeletionTask)
        .where(DeletionTask.request_id == request_id, DeletionTask.status == TaskStatus.failed)
        .values(status=TaskStatus.pending, attempts=0, next_attempt_at=None, finished_at=None)
        .returning(DeletionTask.purger)
        .execution_options(synchronize_session=False)
    )
    return sorted(result.scalars().all())


async def update_task(session: AsyncSession, task_id: uuid.UUID, **values: Any) -> None:
    await session.execute(
        sa.update(DeletionTask)
        .where(DeletionTask.id == task_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


async def release(
    session: AsyncSession,
    request_id: uuid.UUID,
    worker_id: str,
    **values: Any,
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


async def add_subject_hashes(
    session: AsyncSession, request_id: uuid.UUID, hashes: set[str]
) -> None:
    existing = set(
        (
            await session.execute(
                sa.select(SubjectHash.hash).where(SubjectHash.request_id == request_id)
            )
        ).scalars()
    )
    for value in sorted(hashes - existing):
        session.add(SubjectHash(request_id=request_id, hash=value))


async def set_values(session: AsyncSession, request_id: uuid.UUID, **values: Any) -> None:
    await session.execute(
        sa.update(DeletionRequest)
        .where(DeletionRequest.id == request_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


async def deadline_candidates(
    session: AsyncSession, now: datetime, warn_before: timedelta
) -> tuple[Sequence[uuid.UUID], Sequence[uuid.UUID]]:
    """Open requests newly within ``warn_before`` of their due date, and newly overdue."""
    near = await session.execute(
        sa.select(DeletionRequest.id).where(
            DeletionRequest.status.in_(OPEN_STATUSES),
            DeletionRequest.deadline_warned_at.is_(None),
            DeletionRequest.due_at <= now + warn_before,
        )
    )
    overdue = await session.execute(
        sa.select(DeletionRequest.id).where(
            DeletionRequest.status.in_(OPEN_STATUSES),
            DeletionRequest.overdue_warned_at.is_(None),
            DeletionRequest.due_at <= now,
        )
    )
    return near.scalars().all(), overdue.scalars().all()
