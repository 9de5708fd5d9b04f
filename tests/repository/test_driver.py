"""The worker's hot statements as driver SQL (PostgreSQL) write and read what the
SQLAlchemy path does (SQLite: the SQLAlchemy path, under the same calls)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from app import repository
from app.db import create_engine, create_sessionmaker
from app.models import RequestStatus, TaskStatus
from app.repository import driver
from tests.tracking_rows import running_request, two_tasks


def _columns(obj: Any) -> dict[str, Any]:
    return {a.key: getattr(obj, a.key) for a in sa.inspect(type(obj)).column_attrs}


async def test_a_fenced_transaction_on_the_driver_writes_and_reads_as_the_orm(
    tracking_url: str,
) -> None:
    now = datetime.now(UTC)
    request = running_request(lease_owner="me", lease_expires_at=now + timedelta(minutes=5))
    first, second = two_tasks()
    request.tasks = [second, first]
    engine = create_engine(tracking_url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session:
            session.add(request)
            await session.commit()
        async with sessions() as session:
            await repository.begin_driver(session)
            try:
                assert (driver.of(session) is not None) == tracking_url.startswith("postgres")
                assert await repository.fence(session, request.id, "me", now) is False
                assert await repository.fence(session, request.id, "other", now) is None
                await repository.update_tasks(
                    session,
                    [
                        (first.id, {"status": TaskStatus.running, "started_at": now}),
                        (second.id, {"status": TaskStatus.succeeded, "deleted": {"rows": 2}}),
                    ],
                )
                await repository.set_values(
                    session, request.id, resolution={"tenant_ids": ["t"]}, datamap_version=None
                )
                await repository.insert_events(
                    session,
                    [
                        repository.event_row(request.id, "a", actor="me", detail={"n": 1}),
                        repository.event_row(request.id, "b", purger="s3"),
                    ],
                )
                read = await repository.get_request_with_tasks(session, request.id)
                claimed = await repository.get_requests_with_tasks(session, [request.id])
                assert await repository.release(session, request.id, "other") is False
                assert await repository.release(
                    session, request.id, "me", status=RequestStatus.completed, receipt=None
                )
                await session.commit()
            finally:
                repository.end_driver(session)
        async with sessions() as session:
            orm = await repository.get_request_with_tasks(session, request.id)
            events = await repository.list_events(session, request.id)
    finally:
        await engine.dispose()
    assert read is not None and orm is not None
    # As read in the transaction (before the release), and as the ORM reads it after.
    expected = _columns(orm) | {
        "status": "running",
        "lease_owner": "me",
        "lease_expires_at": read.lease_expires_at,
        "receipt": read.receipt,
        "updated_at": read.updated_at,
    }
    assert _columns(read) == expected
    assert isinstance(read.id, uuid.UUID) and read.created_at.tzinfo is not None
    assert [_columns(t) for t in read.tasks] == [_columns(t) for t in orm.tasks]
    assert [t.purger for t in read.tasks] == ["postgres", "mongodb"]
    assert [_columns(t) for t in claimed[request.id][1]] == [_columns(t) for t in orm.tasks]
    assert orm.status == "completed" and orm.lease_owner is None and orm.receipt is None
    assert orm.resolution == {"tenant_ids": ["t"]} and orm.datamap_version is None
    assert orm.updated_at > now
    tasks = {t.purger: t for t in orm.tasks}
    assert (tasks["postgres"].status, tasks["postgres"].started_at) == ("running", now)
    assert (tasks["mongodb"].status, tasks["mongodb"].deleted) == ("succeeded", {"rows": 2})
    assert [(e.type, e.actor, e.purger, e.detail) for e in events] == [
        ("a", "me", None, {"n": 1}),
        ("b", None, "s3", {}),
    ]
