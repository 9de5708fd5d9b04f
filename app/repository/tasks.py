"""A request's tasks (``deletion_tasks``): one per purger, with its outcome and counts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict, Unpack, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import (
    DeletionTask,
    TaskStatus,
)
from app.repository import driver

TASKS = cast(sa.Table, DeletionTask.__table__)


def new_task(purger: str, position: int, after: list[str]) -> DeletionTask:
    return DeletionTask(purger=purger, position=position, after=after, deleted={}, retained={})


# Statements built once (bound values as parameters): SQLAlchemy reuses their compiled
# form by a memoised cache key instead of building and keying them on every call.
_TASKS_OF = (
    sa.select(DeletionTask)
    .where(DeletionTask.request_id == sa.bindparam("request_id"))
    .order_by(DeletionTask.position)
)
# The SET clause comes from the parameters' keys (the columns a run writes).
_UPDATE_TASK = sa.update(TASKS).where(TASKS.c.id == sa.bindparam("task_id"))


async def get_tasks(session: AsyncSession, request_id: uuid.UUID) -> Sequence[DeletionTask]:
    result = await session.execute(_TASKS_OF, {"request_id": request_id})
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


class TaskChanges(TypedDict, total=False):
    """The columns of a task that a run writes."""

    status: TaskStatus
    attempts: int
    error: str | None
    deleted: dict[str, int]
    retained: dict[str, Any]
    next_attempt_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


async def update_task(
    session: AsyncSession, task_id: uuid.UUID, **values: Unpack[TaskChanges]
) -> None:
    # On the session's connection (Core): the ORM's bulk-update machinery costs more than
    # the statement on the worker's hot path, and nothing in the session is synchronised.
    await update_tasks(session, [(task_id, values)])


async def update_tasks(
    session: AsyncSession, changes: Sequence[tuple[uuid.UUID, TaskChanges]]
) -> None:
    """Several tasks' changes in as few round trips as there are shapes of change (the
    same columns written): each shape is one executemany. A task changed more than once
    is first merged into one change (the later value of a column wins, as written one
    after the other), so that no shape's batch can overtake a later change of it."""
    merged: dict[uuid.UUID, dict[str, Any]] = {}
    for task_id, values in changes:
        merged.setdefault(task_id, {}).update(values)
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for task_id, columns in merged.items():
        shapes.setdefault(tuple(sorted(columns)), []).append({**columns, "task_id": task_id})
    if not shapes:
        return
    raw = driver.of(session)
    if raw is not None:
        for shape, rows in shapes.items():
            statement = driver.compiled(_UPDATE_TASK, shape)
            if len(rows) == 1:
                await driver.execute(raw, statement, rows[0])
            else:
                await driver.executemany(raw, statement, rows)
        return
    connection = await session.connection()
    for rows in shapes.values():
        await connection.execute(_UPDATE_TASK, rows)
