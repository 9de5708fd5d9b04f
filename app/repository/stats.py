"""What the metrics endpoint reads at scrape time: requests per kind and status, the
oldest open request, the overdue ones, and the longest-waiting due request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import OPEN_STATUSES, DeletionRequest, RequestStatus


@dataclass(frozen=True)
class QueueStats:
    counts: list[tuple[str, str, int]]  # kind, status, requests
    oldest_open: datetime | None  # created_at of the oldest open request
    overdue: int  # open requests past their due date
    oldest_waiting: datetime | None  # run_after of the longest-waiting due, unleased request


async def queue_stats(connection: AsyncConnection, now: datetime) -> QueueStats:
    """The whole service's view, from the tracking database (the same in every process)."""
    open_statuses = [s.value for s in OPEN_STATUSES]
    rows = (
        await connection.execute(
            sa.select(DeletionRequest.kind, DeletionRequest.status, sa.func.count()).group_by(
                DeletionRequest.kind, DeletionRequest.status
            )
        )
    ).all()
    oldest = (
        await connection.execute(
            sa.select(sa.func.min(DeletionRequest.created_at)).where(
                DeletionRequest.status.in_(open_statuses)
            )
        )
    ).scalar()
    overdue = (
        await connection.execute(
            sa.select(sa.func.count()).where(
                DeletionRequest.status.in_(open_statuses), DeletionRequest.due_at < now
            )
        )
    ).scalar_one()
    waiting = (
        await connection.execute(
            sa.select(sa.func.min(DeletionRequest.run_after)).where(
                DeletionRequest.status.in_([RequestStatus.pending, RequestStatus.running]),
                DeletionRequest.run_after <= now,
                DeletionRequest.lease_owner.is_(None),
            )
        )
    ).scalar()
    return QueueStats(
        counts=[(kind, status, count) for kind, status, count in rows],
        oldest_open=oldest,
        overdue=overdue,
        oldest_waiting=waiting,
    )
