"""Meta deauthorize callbacks (``meta_deauthorizations``): recorded first, then expanded
under a lease by whoever gets to them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TypedDict

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import DriverConnection
from app.models import MetaDeauthorization


class DeauthorizationChanges(TypedDict, total=False):
    """What giving a claimed deauthorization back writes: expanded (and minimised), or
    when to try again."""

    run_after: datetime | None
    expanded_at: datetime | None
    user_id: str | None
    disconnects: int | None
    skipped_reconnected: int | None


_POSTGRES_INSERT_SQL = """
INSERT INTO {table} ({names}) VALUES ({params})
ON CONFLICT (replay_key) DO NOTHING RETURNING id
"""


def _postgres_insert() -> tuple[str, tuple[str, ...]]:
    """The INSERT of one deauthorization on PostgreSQL, its attributes in parameter order
    (only the model's own table and column names go into the text)."""
    columns = sa.inspect(MetaDeauthorization).column_attrs
    names = ", ".join(prop.columns[0].name for prop in columns)
    params = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    statement = _POSTGRES_INSERT_SQL.format(
        table=MetaDeauthorization.__tablename__, names=names, params=params
    )
    return statement, tuple(prop.key for prop in columns)


_POSTGRES_INSERT, _INSERT_KEYS = _postgres_insert()


async def insert_deauthorization(
    db: AsyncSession | DriverConnection, record: MetaDeauthorization
) -> bool:
    """Store a verified deauthorize callback (every column as ``record`` has it); False,
    with nothing written, when one with the same ``replay_key`` is stored (the same
    callback delivered again). On PostgreSQL's driver connection one statement in
    autocommit; on a session, committed (or rolled back) here."""
    if isinstance(db, DriverConnection):
        values = [getattr(record, key) for key in _INSERT_KEYS]
        return await db.fetchrow(_POSTGRES_INSERT, *values) is not None
    db.add(record)
    try:
        await db.commit()
        return True
    except IntegrityError:
        await db.rollback()
        return False


async def deauthorization_by_replay_key(
    session: AsyncSession, replay_key: str
) -> MetaDeauthorization | None:
    """The deauthorization stored for a callback (by its ``replay_key``), as committed."""
    record = (
        await session.execute(
            sa.select(MetaDeauthorization)
            .where(MetaDeauthorization.replay_key == replay_key)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    await session.commit()
    return record


def _deauthorization_due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        MetaDeauthorization.expanded_at.is_(None),
        MetaDeauthorization.run_after <= now,
        sa.or_(
            MetaDeauthorization.lease_expires_at.is_(None),
            MetaDeauthorization.lease_expires_at < now,
        ),
    )


async def due_deauthorizations(
    session: AsyncSession, now: datetime, limit: int = 100
) -> list[uuid.UUID]:
    query = (
        sa.select(MetaDeauthorization.id)
        .where(_deauthorization_due(now))
        .order_by(MetaDeauthorization.run_after)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def claim_due_deauthorizations(
    session: AsyncSession, owner: str, now: datetime, lease: timedelta, limit: int
) -> list[MetaDeauthorization]:
    """Take up to ``limit`` due, unexpanded deauthorizations under a lease (the longest
    due first), commit, and return them. On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets
    several workers take different ones at once; the conditional UPDATE makes it safe on
    SQLite too."""
    candidates = list(
        (
            await session.execute(
                sa.select(MetaDeauthorization.id)
                .where(_deauthorization_due(now))
                .order_by(MetaDeauthorization.run_after)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).scalars()
    )
    if not candidates:
        await session.rollback()
        return []
    claimed = list(
        (
            await session.execute(
                sa.update(MetaDeauthorization)
                .where(MetaDeauthorization.id.in_(candidates), _deauthorization_due(now))
                .values(
                    lease_owner=owner,
                    lease_expires_at=now + lease,
                    attempts=MetaDeauthorization.attempts + 1,
                )
                .returning(MetaDeauthorization.id)
                .execution_options(synchronize_session=False)
            )
        ).scalars()
    )
    records = (
        (
            await session.execute(
                sa.select(MetaDeauthorization)
                .where(MetaDeauthorization.id.in_(claimed))
                .order_by(MetaDeauthorization.run_after)
                .execution_options(populate_existing=True)
            )
        )
        .scalars()
        .all()
        if claimed
        else []
    )
    await session.commit()
    return list(records)


async def claim_deauthorization(
    session: AsyncSession, record_id: uuid.UUID, owner: str, now: datetime, lease: timedelta
) -> MetaDeauthorization | None:
    """Take one due, unexpanded deauthorization under a lease (a conditional UPDATE: of
    several workers exactly one wins), commit, and return it; None when another holds it
    or it is expanded already."""
    result = await session.execute(
        sa.update(MetaDeauthorization)
        .where(MetaDeauthorization.id == record_id, _deauthorization_due(now))
        .values(
            lease_owner=owner,
            lease_expires_at=now + lease,
            attempts=MetaDeauthorization.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        await session.rollback()
        return None
    await session.commit()
    return await session.get(MetaDeauthorization, record_id, populate_existing=True)


async def finish_deauthorization(
    session: AsyncSession,
    record_id: uuid.UUID,
    owner: str,
    values: DeauthorizationChanges,
) -> bool:
    """Give a claimed deauthorization back with ``values`` (expanded, or when to try
    again), only while ``owner`` still holds it; commits."""
    result = await session.execute(
        sa.update(MetaDeauthorization)
        .where(
            MetaDeauthorization.id == record_id,
            MetaDeauthorization.lease_owner == owner,
            MetaDeauthorization.expanded_at.is_(None),
        )
        .values(lease_owner=None, lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]
