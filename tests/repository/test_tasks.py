"""Task writes on SQLite and PostgreSQL."""

from __future__ import annotations

from app import repository
from app.db import create_engine, create_sessionmaker
from app.models import TaskStatus
from tests.tracking_rows import running_request, two_tasks


async def test_a_task_changed_several_times_in_one_write_ends_as_the_last_change_left_it(
    tracking_url: str,
) -> None:
    """Changes written together are batched by the columns they set; a task changed
    three times (running, then succeeded with its counts, then failed) ends failed with
    the counts, as three updates one after the other leave it, and another task's change
    in the same batch is written too."""
    request = running_request()
    first, second = two_tasks()
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
