"""Intake's one statement (PostgreSQL: positional parameters, arrays for the task and
event rows) stores every column as given, on both backends: what the ORM reads back is
what was filed, a subject under a hold is filed ``on_hold``, and a refused request writes
nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import repository
from app.datamap import Selection
from app.db import create_engine, create_sessionmaker
from app.models import (
    DeletionEvent,
    DeletionRequest,
    DeletionTask,
    LegalHold,
    LegalHoldHash,
    RequestKind,
    RequestSource,
    RequestStatus,
    SubjectHash,
)
from app.services.intake.command import EmailFiling, NewDeletion, build_rows
from app.subjects import Review

HASH_KEY = b"k" * 32


@pytest.fixture
async def sessions(tracking_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(tracking_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def _command(**changes: Any) -> NewDeletion:
    values: dict[str, Any] = {
        "kind": RequestKind.account,
        "identities": {"site_name": f"site-{uuid.uuid4().hex[:8]}"},
        "source": RequestSource.email,
        "requested_by": "privacy-mailbox",
        "status": RequestStatus.awaiting_confirmation,
        "notify_email": "fan@example.org",
        "reason": "Please delete my account.",
        "idempotency_key": uuid.uuid4().hex,
        "fingerprint": "f" * 64,
        "pinned": Selection(tenant_ids=[str(uuid.uuid4())]),
        "email": EmailFiling(
            message_id_hash=uuid.uuid4().hex,
            confirm_token_hash=uuid.uuid4().hex,
            confirm_ttl=timedelta(days=7),
            recipients=("owner@example.org",),
            review_reason="ambiguous",
            review=Review(named={"site_name": "Site"}),
        ),
        **changes,
    }
    return NewDeletion(**values)


async def _file(
    sessions: async_sessionmaker[AsyncSession],
    command: NewDeletion,
    hashes: set[str],
    held_event: str | None = None,
) -> tuple[bool, dict[str, Any], list[dict[str, Any]]]:
    request_row, task_rows = build_rows(command, hash_key=HASH_KEY, deadline_days=30)
    async with sessions() as session:
        stored = await repository.insert_request_rows(
            session, request_row, task_rows, hashes, actor="test", detail={"via": "test"},
            held_event=held_event,
        )  # fmt: skip
        await session.commit()
    return stored, request_row, task_rows  # request_row: as filed (on_hold when held)


def _columns(obj: Any) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in sa.inspect(type(obj)).column_attrs}


async def _read(
    sessions: async_sessionmaker[AsyncSession], request_id: uuid.UUID
) -> tuple[DeletionRequest, list[DeletionEvent], list[str]]:
    async with sessions() as session:
        request = await repository.get_request(session, request_id)
        assert request is not None
        events = (
            await session.scalars(
                sa.select(DeletionEvent)
                .where(DeletionEvent.request_id == request_id)
                .order_by(DeletionEvent.id)
            )
        ).all()
        hashes = (
            await session.scalars(
                sa.select(SubjectHash.hash).where(SubjectHash.request_id == request_id)
            )
        ).all()
    return request, list(events), sorted(hashes)


def _same(read: Any, given: Any) -> bool:
    if isinstance(given, datetime):
        return isinstance(read, datetime) and bool(read == given)
    if isinstance(given, str):  # enums are str
        return bool(read == str(given))
    return bool(read == given)


async def test_every_column_of_a_filed_request_and_its_tasks_reads_back_as_given(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    hashes = {uuid.uuid4().hex, uuid.uuid4().hex}
    stored, request_row, task_rows = await _file(sessions, _command(), hashes)
    assert stored is True
    request, events, stored_hashes = await _read(sessions, request_row["id"])

    read = _columns(request)
    for column, value in request_row.items():
        key = next(
            a.key for a in sa.inspect(DeletionRequest).column_attrs if a.columns[0].name == column
        )
        assert _same(read[key], value), (column, read[key], value)
    assert request.confirm_recipients == ["owner@example.org"]
    assert request.review == {"named": {"site_name": "Site"}, "candidates": []}
    assert request.resolution is None and request.receipt is None  # NULL, not JSON null
    assert [_columns(task) for task in request.tasks] == [
        {**row, "request_id": request.id} for row in sorted(task_rows, key=lambda r: r["position"])
    ]
    assert stored_hashes == sorted(hashes)
    assert [(e.type, e.actor, e.purger, e.detail) for e in events] == [
        ("created", "test", None, {"via": "test", "status": "awaiting_confirmation"})
    ]


async def test_a_subject_under_an_active_hold_is_filed_on_hold_with_its_events_in_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    held, free = uuid.uuid4().hex, uuid.uuid4().hex
    async with sessions() as session:
        hold = LegalHold(subject={"site_name": "x"}, created_by="legal")
        session.add(hold)
        await session.flush()
        session.add(LegalHoldHash(hold_id=hold.id, hash=held))
        await session.commit()

    command = _command(status=RequestStatus.pending, email=None)
    stored, request_row, _ = await _file(sessions, command, {held, free}, held_event="held")
    assert stored is True
    assert request_row["status"] == RequestStatus.on_hold and request_row["run_after"] is None
    request, events, _ = await _read(sessions, request_row["id"])
    assert (request.status, request.run_after) == (RequestStatus.on_hold, None)
    assert [(e.type, e.detail) for e in events] == [
        ("created", {"via": "test", "status": "on_hold"}),
        ("held", {}),
    ]

    # The same subject hashes without the held event asked for: not checked, filed pending.
    other = _command(status=RequestStatus.pending, email=None)
    stored, request_row, _ = await _file(sessions, other, {held})
    assert stored is True
    request, events, _ = await _read(sessions, request_row["id"])
    assert request.status == RequestStatus.pending and request.run_after is not None
    assert [e.type for e in events] == ["created"]


async def test_a_refused_request_writes_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    command = _command(status=RequestStatus.pending, email=None, idempotency_key=None)
    stored, _, _ = await _file(sessions, command, {uuid.uuid4().hex})
    assert stored is True
    # The same kind and subject while the first is open: the unique index refuses it.
    stored, second, _ = await _file(sessions, command, {uuid.uuid4().hex})
    assert stored is False
    async with sessions() as session:
        for model, column in (
            (DeletionRequest, DeletionRequest.id),
            (DeletionTask, DeletionTask.request_id),
            (SubjectHash, SubjectHash.request_id),
            (DeletionEvent, DeletionEvent.request_id),
        ):
            count = await session.scalar(
                sa.select(sa.func.count()).select_from(model).where(column == second["id"])
            )
            assert count == 0, model.__tablename__


async def test_a_naive_datetime_is_refused_before_anything_is_stored(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    request_row, task_rows = build_rows(_command(), hash_key=HASH_KEY, deadline_days=30)
    request_row["due_at"] = request_row["due_at"].replace(tzinfo=None)
    async with sessions() as session:
        # ValueError on the driver's statement; SQLAlchemy's StatementError around it on SQLite.
        with pytest.raises((ValueError, sa.exc.StatementError), match="naive datetime"):
            await repository.insert_request_rows(
                session, request_row, task_rows, set(), actor="test", detail={}
            )
        await session.rollback()
    async with sessions() as session:
        assert await repository.get_request(session, request_row["id"]) is None
