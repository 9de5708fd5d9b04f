"""The work queue over ``deletion_requests``: claim under a lease, heartbeat, fence,
release, and how deep the queue is."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Unpack, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from app.models import (
    DeletionRequest,
    DeletionTask,
    RequestKind,
    RequestStatus,
    utcnow,
)
from app.repository import driver
from app.repository.holds import SUBJECT_HASHES, active_hashes
from app.repository.requests import REQUEST_LOADER, REQUESTS_WITH_TASKS, RequestChanges
from app.repository.tasks import TASKS


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


def _any_of(
    column: sa.orm.InstrumentedAttribute[str], values: Iterable[str], name: str
) -> sa.ColumnElement[bool]:
    return column == sa.any_(
        sa.bindparam(name, value=sorted(str(v) for v in values), type_=postgresql.ARRAY(sa.String))
    )


def _claimable(
    now: datetime | sa.BindParameter[datetime], *, raw: bool = False
) -> sa.ColumnElement[bool]:
    """Due and free. ``raw``: for driver SQL, the statuses as an array (an IN list expands
    at execution)."""
    return sa.and_(
        _any_of(DeletionRequest.status, WORKABLE, "workable")
        if raw
        else DeletionRequest.status.in_(WORKABLE),
        DeletionRequest.run_after.is_not(None),
        DeletionRequest.run_after <= now,
        sa.or_(DeletionRequest.lease_expires_at.is_(None), DeletionRequest.lease_expires_at < now),
    )


REQUESTS = cast(sa.Table, DeletionRequest.__table__)

# Short work first: a disconnect (a few rows, a Meta call) is claimed before account and
# Meta data deletions that may take minutes, so that it never queues behind them (#18).
SHORT_KINDS = frozenset({RequestKind.instagram_disconnect})
_IS_SHORT = DeletionRequest.kind.in_([kind.value for kind in SHORT_KINDS])
SHORT_FIRST = sa.case((_IS_SHORT, 0), else_=1)


# The claim's statements, built once (bound values as parameters): see ``_FENCE``.
_NOW = sa.bindparam("now", type_=DeletionRequest.run_after.type)


def _candidates(is_short: sa.ColumnElement[bool], *, raw: bool = False) -> Any:
    return (
        sa.select(DeletionRequest.id, DeletionRequest.lease_owner, DeletionRequest.status, is_short)
        .where(_claimable(_NOW, raw=raw))
        .order_by(
            sa.case((is_short, 0), else_=1), DeletionRequest.run_after, DeletionRequest.created_at
        )
        .limit(sa.bindparam("limit", type_=sa.Integer))
        .with_for_update(skip_locked=True)
    )


_CANDIDATES = _candidates(_IS_SHORT)
_CANDIDATES_SHORT = _CANDIDATES.where(_IS_SHORT)
# The same as driver SQL: the short kinds as an array (an IN list expands at execution).
_IS_SHORT_RAW = _any_of(DeletionRequest.kind, SHORT_KINDS, "short_kinds")
_CANDIDATES_RAW = _candidates(_IS_SHORT_RAW, raw=True)
_CANDIDATES_SHORT_RAW = _CANDIDATES_RAW.where(_IS_SHORT_RAW)
_CLAIM_VALUES = {
    # pending -> running; finished requests keep their status (confirmations).
    "status": sa.case(
        (REQUESTS.c.status == RequestStatus.pending.value, RequestStatus.running.value),
        else_=REQUESTS.c.status,
    ),
    "lease_owner": sa.bindparam("worker_id"),
    "lease_expires_at": sa.bindparam("until", type_=DeletionRequest.lease_expires_at.type),
    "updated_at": _NOW,
}
_CLAIM = (
    sa.update(REQUESTS)
    .where(REQUESTS.c.id.in_(sa.bindparam("ids", expanding=True)), _claimable(_NOW))
    .values(_CLAIM_VALUES)
    .returning(REQUESTS.c.id)
)
# The same as driver SQL (no expanding parameter: an array).
_CLAIM_RAW = (
    sa.update(REQUESTS)
    .where(
        REQUESTS.c.id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Uuid))),
        _claimable(_NOW, raw=True),
    )
    .values(_CLAIM_VALUES)
    .returning(REQUESTS.c.id)
)
# The id as the SQLAlchemy path returns it (asyncpg's own UUID type otherwise).
_ID = cast(
    Callable[[Any], uuid.UUID],
    REQUESTS.c.id.type.dialect_impl(driver.DIALECT).result_processor(driver.DIALECT, None)
    or (lambda value: value),
)
_CLAIMED_ROWS = (
    sa.select(DeletionRequest)
    .options(joinedload(DeletionRequest.tasks))
    .where(DeletionRequest.id.in_(sa.bindparam("ids", expanding=True)))
)

_CLAIMED_ROWS_RAW = REQUESTS_WITH_TASKS.where(
    REQUESTS.c.id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Uuid)))
).order_by(REQUESTS.c.id, TASKS.c.position)


async def claim_next(
    session: AsyncSession, worker_id: str, lease: timedelta, now: datetime
) -> Claim | None:
    """Take the next due request under a lease, or None."""
    claims = await claim_batch(session, worker_id, lease, now, 1)
    return claims[0] if claims else None


async def claim_batch(
    session: AsyncSession,
    worker_id: str,
    lease: timedelta,
    now: datetime,
    limit: int,
    long_limit: int | None = None,
) -> list[Claim]:
    """Take up to ``limit`` due requests under a lease (short work first, then the longest
    due), of which at most ``long_limit`` (default: all) of a long kind, i.e. not in
    :data:`SHORT_KINDS`: two statements for the whole batch. ``long_limit=0`` claims short
    work only (a worker whose slots for long work are full keeps taking disconnects).

    On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets workers pass each other's candidates
    (no two workers wait on the same rows); the conditional UPDATE makes the claim safe
    on SQLite too.
    """
    query = _CANDIDATES_SHORT if long_limit == 0 else _CANDIDATES
    raw = driver.of(session)
    rows: Sequence[Any]
    if raw is not None:
        query = _CANDIDATES_SHORT_RAW if long_limit == 0 else _CANDIDATES_RAW
        found = await driver.fetch(raw, driver.compiled(query), {"now": now, "limit": limit})
        rows = [(_ID(row[0]), row[1], row[2], row[3]) for row in found]
    else:
        connection = await session.connection()
        rows = (await connection.execute(query, {"now": now, "limit": limit})).all()
    if long_limit is not None:
        # Short ones come first: the long ones past long_limit stay for later (their row
        # locks end with this transaction).
        kept, longs = [], 0
        for row in rows:
            longs += not row[3]
            if row[3] or longs <= long_limit:
                kept.append(row)
        rows = kept
    candidates = [(row[0], row[1], row[2]) for row in rows]
    if not candidates:
        return []
    values = {
        "ids": [c[0] for c in candidates],
        "now": now,
        "until": now + lease,
        "worker_id": worker_id,
    }
    if raw is not None:
        found = await driver.fetch(raw, driver.compiled(_CLAIM_RAW), values)
        claimed = {_ID(row[0]) for row in found}
    else:
        claimed = set((await connection.execute(_CLAIM, values)).scalars())
    return [
        Claim(request_id, previous_owner, status == RequestStatus.pending)
        for request_id, previous_owner, status in candidates
        if request_id in claimed
    ]


async def get_requests_with_tasks(
    session: AsyncSession, request_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[DeletionRequest, list[DeletionTask]]]:
    """Claimed requests and their tasks (in plan order), read in the claiming transaction
    (driver SQL in a transaction that :func:`driver.begin` began)."""
    raw = driver.of(session)
    if raw is not None:
        found = await driver.fetch(raw, driver.compiled(_CLAIMED_ROWS_RAW), {"ids": request_ids})
        requests: Sequence[DeletionRequest] = REQUEST_LOADER.load(found)
    else:
        result = await session.execute(_CLAIMED_ROWS, {"ids": request_ids})
        requests = result.unique().scalars().all()
    return {request.id: (request, list(request.tasks)) for request in requests}


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


# Built once (bound values as parameters): SQLAlchemy reuses their compiled form by a
# memoised cache key instead of building and keying the statement on every call.
_FENCE = (
    sa.select(
        REQUESTS.c.id,
        sa.exists()
        .where(
            SUBJECT_HASHES.c.request_id == REQUESTS.c.id,
            SUBJECT_HASHES.c.hash.in_(active_hashes()),
        )
        .label("held"),
    )
    .where(
        REQUESTS.c.id == sa.bindparam("request_id"),
        REQUESTS.c.lease_owner == sa.bindparam("worker_id"),
        REQUESTS.c.lease_expires_at > sa.bindparam("now"),
    )
    .with_for_update(of=REQUESTS)
)


async def fence(
    session: AsyncSession, request_id: uuid.UUID, worker_id: str, now: datetime
) -> bool | None:
    """The fencing check, inside the transaction that writes under the lease (the row is
    locked until it ends): None when ``worker_id`` does not hold the lease, else whether
    a legal hold matches the request at this moment (what it named or resolved to), in
    the same round trip. Core, on the session's connection (driver SQL in a transaction
    that :func:`driver.begin` began): the worker's hot path."""
    values = {"request_id": request_id, "worker_id": worker_id, "now": now}
    raw = driver.of(session)
    if raw is not None:
        found = await driver.fetchrow(raw, driver.compiled(_FENCE), values)
        return None if found is None else bool(found[1])
    connection = await session.connection()
    row = (
        await connection.execute(
            _FENCE, {"request_id": request_id, "worker_id": worker_id, "now": now}
        )
    ).first()
    return None if row is None else bool(row[1])


async def holds_lease(
    session: AsyncSession, request_id: uuid.UUID, worker_id: str, now: datetime
) -> bool:
    """Fencing check, inside the transaction that writes a task's outcome (see
    :func:`fence`)."""
    return await fence(session, request_id, worker_id, now) is not None


_RELEASE = sa.update(REQUESTS).where(
    REQUESTS.c.id == sa.bindparam("request_id"),
    REQUESTS.c.lease_owner == sa.bindparam("worker_id"),
)


async def release(
    session: AsyncSession,
    request_id: uuid.UUID,
    worker_id: str,
    **values: Unpack[RequestChanges],
) -> bool:
    """Give the request back (with its new status and next run time), if still ours."""
    params = {
        **values,
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": utcnow(),
        "request_id": request_id,
        "worker_id": worker_id,
    }
    raw = driver.of(session)
    if raw is not None:
        columns = [key for key in params if key not in ("request_id", "worker_id")]
        return bool(await driver.execute(raw, driver.compiled(_RELEASE, columns), params))
    connection = await session.connection()
    result = await connection.execute(_RELEASE, params)
    return bool(result.rowcount)


async def queue_depth(session: AsyncSession, now: datetime) -> int:
    result = await session.scalar(
        sa.select(sa.func.count()).select_from(DeletionRequest).where(_claimable(now))
    )
    return int(result or 0)
