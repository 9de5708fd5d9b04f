"""Legal holds (``legal_holds``, ``legal_hold_hashes``) and what they do to requests.

A request is held when one of its subject hashes (``deletion_subject_hashes``: the
identities it named, and those it resolved to once resolved) is a hash of an active hold.
Matching is equality of keyed hashes, nothing else: a hold never reaches a request by a
prefix, a case or another tenant's identity.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.models import (
    DeletionRequest,
    LegalHold,
    LegalHoldHash,
    RequestStatus,
    SubjectHash,
)
from app.repository.requests import decode_cursor, encode_cursor

SUBJECT_HASHES = cast(sa.Table, SubjectHash.__table__)


def active_hashes() -> sa.Select[str]:
    """The hashes of every active (unreleased) legal hold."""
    return (
        sa.select(LegalHoldHash.hash)
        .join(LegalHold, LegalHold.id == LegalHoldHash.hold_id)
        .where(LegalHold.released_at.is_(None))
    )


# Built once (see ``queue._FENCE``): the worker asks it before a task's attempt.
_REQUEST_IS_HELD = (
    sa.select(sa.literal(1))
    .where(
        SUBJECT_HASHES.c.request_id == sa.bindparam("request_id"),
        SUBJECT_HASHES.c.hash.in_(active_hashes()),
    )
    .limit(1)
)


def _held_requests() -> sa.Select[uuid.UUID]:
    """Ids of the requests that an active hold matches."""
    return sa.select(SubjectHash.request_id).where(SubjectHash.hash.in_(active_hashes()))


def add_hold(
    session: AsyncSession,
    *,
    subject: dict[str, str],
    hashes: Collection[str],
    reason: str | None,
    created_by: str,
    now: datetime,
) -> LegalHold:
    hold = LegalHold(
        id=uuid.uuid4(), subject=subject, reason=reason, created_by=created_by, created_at=now
    )
    session.add(hold)
    session.add_all(LegalHoldHash(hold_id=hold.id, hash=value) for value in sorted(set(hashes)))
    return hold


async def get_hold(session: AsyncSession, hold_id: uuid.UUID) -> LegalHold | None:
    return await session.get(LegalHold, hold_id, populate_existing=True)


async def list_holds(
    session: AsyncSession, *, active: bool, limit: int, cursor: str | None = None
) -> tuple[Sequence[LegalHold], str | None]:
    """Newest first, by the same cursor as requests (created_at, id)."""
    query = sa.select(LegalHold)
    if active:
        query = query.where(LegalHold.released_at.is_(None))
    if cursor:
        created, hold_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                LegalHold.created_at < created,
                sa.and_(LegalHold.created_at == created, LegalHold.id < hold_id),
            )
        )
    query = query.order_by(LegalHold.created_at.desc(), LegalHold.id.desc())
    rows = (await session.execute(query.limit(limit + 1))).scalars().all()
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def release_hold(
    session: AsyncSession,
    hold_id: uuid.UUID,
    *,
    released_by: str,
    subject: dict[str, Any],
    now: datetime,
) -> bool:
    """Mark an active hold released, its subject replaced (by keyed hashes) and its reason
    gone; False when it is not active (released already, concurrently or before)."""
    result = await session.execute(
        sa.update(LegalHold)
        .where(LegalHold.id == hold_id, LegalHold.released_at.is_(None))
        .values(released_at=now, released_by=released_by, subject=subject, reason=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def is_held(session: AsyncSession, hashes: Collection[str]) -> bool:
    """Whether an active hold has one of these identity hashes (a request being filed)."""
    if not hashes:
        return False
    query = sa.select(sa.literal(1)).where(
        LegalHoldHash.hash.in_(sorted(hashes)), LegalHoldHash.hash.in_(active_hashes())
    )
    return (await session.execute(query.limit(1))).first() is not None


async def request_is_held(session: AsyncSession, request_id: uuid.UUID) -> bool:
    """Whether an active hold matches a stored request (what it named or resolved to)."""
    connection = await session.connection()
    row = (await connection.execute(_REQUEST_IS_HELD, {"request_id": request_id})).first()
    return row is not None


async def hold_waiting_requests(session: AsyncSession, now: datetime) -> list[uuid.UUID]:
    """Put on hold every matched request that no worker holds: ``pending`` ones, and
    ``running`` ones between attempts (waiting for a retry) or whose worker's lease
    expired. Their lease columns are cleared, so that a worker whose lease expired
    cannot extend it and write on. A request under a live lease is left to its worker,
    which stops before its next task. The ids of the requests put on hold."""
    free = sa.or_(
        DeletionRequest.status == RequestStatus.pending,
        sa.and_(
            DeletionRequest.status == RequestStatus.running,
            sa.or_(
                DeletionRequest.lease_owner.is_(None),
                DeletionRequest.lease_expires_at < now,
            ),
        ),
    )
    result = await session.execute(
        sa.update(DeletionRequest)
        .where(DeletionRequest.id.in_(_held_requests()), free)
        .values(
            status=RequestStatus.on_hold,
            run_after=None,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(DeletionRequest.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(result.scalars().all())


async def resume_released_requests(session: AsyncSession, now: datetime) -> list[uuid.UUID]:
    """Every request on hold that no active hold matches any more goes back to
    ``pending``, due now. The ids of the requests resumed."""
    result = await session.execute(
        sa.update(DeletionRequest)
        .where(
            DeletionRequest.status == RequestStatus.on_hold,
            DeletionRequest.id.not_in(_held_requests()),
        )
        .values(status=RequestStatus.pending, run_after=now, updated_at=now)
        .returning(DeletionRequest.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(result.scalars().all())


@dataclass(frozen=True)
class HoldStats:
    active: int
    oldest: datetime | None  # created_at of the oldest active hold


async def hold_stats(connection: AsyncConnection) -> HoldStats:
    row = (
        await connection.execute(
            sa.select(sa.func.count(), sa.func.min(LegalHold.created_at)).where(
                LegalHold.released_at.is_(None)
            )
        )
    ).one()
    return HoldStats(active=int(row[0]), oldest=row[1])
