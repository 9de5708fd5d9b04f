"""Task writes on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app import repository
from app.db import create_engine, create_sessionmaker
from app.models import DeletionRequest, DeletionTask, RequestKind, RequestStatus, TaskStatus


async def test_a_task_changed_several_times_in_one_write_ends_as_the_last_change_left_it(
    tracking_url: str,
) -> None:
    """Changes written together are batched by the columns they set; a task changed
    three times (running, then succeeded with its counts, then failed) ends failed with
    the counts, as three updates one after the other leave it, and another task's change
    in the same batch is written too."""
    now = datetime.now(UTC)
    request = DeletionRequest(
        id=uuid.uuid4(),
        kind=RequestKind.account.value,
        status=RequestStatus.running.value,
        requested_by="test",
        subject={"site_name": uuid.uuid4().hex},
        subject_key=uuid.uuid4().hex,
        confirmation_code=uuid.uuid4().hex,
        due_at=now + timedelta(days=30),
    )
    first, second = (
        DeletionTask(id=uuid.uuid4(), purger=name, position=i, after=[], deleted={}, retained={})
        for i, name in enumerate(("postgres", "mongodb"))
    )
    request.tasks = [first, second]
    engine = create_engine(tracking_url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session:
            session.add(request)
            await session.commit()
        async with sessions() as session:
            await repository.update_tasks(
                session,
                [
                    (first.id, {"status": TaskStatus.running}),
                    (second.id, {"status": TaskStatus.running}),
                    (first.id, {"status": TaskStatus.succeeded, "deleted": {"rows": 3}}),
                    (first.id, {"status": TaskStatus.failed}),
                ],
            )
            await session.commit()
        async with sessions() as session:
            tasks = {t.purger: t for t in await repository.get_tasks(session, request.id)}
    finally:
        await engine.dispose()
    assert (tasks["postgres"].status, tasks["postgres"].deleted) == ("failed", {"rows": 3})
    assert tasks["mongodb"].status == "running"
