"""The event log of a request (``deletion_events``): append, read, ask."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import (
    DeletionEvent,
    utcnow,
)
from app.repository import driver

EVENTS = cast(sa.Table, DeletionEvent.__table__)
_INSERT_EVENTS = sa.insert(EVENTS)
_HAS_EVENT = (
    sa.select(sa.literal(1))
    .where(EVENTS.c.request_id == sa.bindparam("request_id"), EVENTS.c.type == sa.bindparam("kind"))
    .limit(1)
)


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


_EVENT_COLUMNS = ("request_id", "type", "actor", "purger", "detail", "at")


def event_row(
    request_id: uuid.UUID,
    type_: str,
    *,
    actor: str | None = None,
    purger: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event as a row for :func:`insert_events`."""
    return {
        "request_id": request_id,
        "type": type_,
        "actor": actor,
        "purger": purger,
        "detail": detail or {},
        "at": utcnow(),
    }


async def insert_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Append events (rows of :func:`event_row`) in one statement, without the ORM's unit
    of work: the worker's hot path."""
    if not rows:
        return
    raw = driver.of(session)
    if raw is not None:
        statement = driver.compiled(_INSERT_EVENTS, _EVENT_COLUMNS)
        if len(rows) == 1:
            await driver.execute(raw, statement, rows[0])
        else:
            await driver.executemany(raw, statement, rows)
    else:
        connection = await session.connection()
        await connection.execute(_INSERT_EVENTS, rows)


async def list_events(session: AsyncSession, request_id: uuid.UUID) -> Sequence[DeletionEvent]:
    result = await session.execute(
        sa.select(DeletionEvent)
        .where(DeletionEvent.request_id == request_id)
        .order_by(DeletionEvent.id)
    )
    return result.scalars().all()


async def has_event(session: AsyncSession, request_id: uuid.UUID, kind: str) -> bool:
    connection = await session.connection()
    row = (await connection.execute(_HAS_EVENT, {"request_id": request_id, "kind": kind})).first()
    return row is not None
