"""Deletion requests: reading, listing by cursor, status transitions, subject hashes, and
intake (a new request with its tasks, hashes and first event in one statement)."""

from __future__ import annotations

import base64
import functools
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypedDict, Unpack, cast

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import joinedload, make_transient_to_detached
from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

from app.db import DriverConnection
from app.models import (
    OPEN_STATUSES,
    VERIFIED_OPEN_STATUSES,
    Base,
    DeletionEvent,
    DeletionRequest,
    DeletionTask,
    LegalHold,
    LegalHoldHash,
    RequestKind,
    RequestStatus,
    SubjectHash,
    utcnow,
)
from app.repository import driver
from app.repository.tasks import TASKS


class RequestChanges(TypedDict, total=False):
    """The columns of a request that change after intake: what a transition, a release or
    :func:`set_values` may write besides the status and lease columns they set themselves."""

    status: RequestStatus
    status_reason: str | None
    subject: dict[str, Any]
    subject_key: str
    notify_email: str | None
    reason: str | None
    completed_at: datetime | None
    run_after: datetime | None
    resolution: dict[str, Any] | None
    resolution_digest: dict[str, Any] | None
    datamap_version: str | None
    receipt: dict[str, Any] | None
    webhook_status: str | None
    email_status: str | None
    notify_attempts: int
    minimised_at: datetime | None
    deadline_warned_at: datetime | None
    overdue_warned_at: datetime | None
    confirmed_at: datetime | None
    confirm_recipients: list[str] | None
    pinned: dict[str, Any] | None
    review: dict[str, Any] | None


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class RequestFilter:
    status: RequestStatus | None = None
    kind: RequestKind | None = None
    overdue: bool = False
    subject_hash: str | None = None


class _Listed(Protocol):
    """A row listed newest first by (created_at, id): a request, a legal hold."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> uuid.UUID: ...


def encode_cursor(request: _Listed) -> str:
    raw = f"{request.created_at.isoformat()}|{request.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, request_id = raw.split("|", 1)
        return datetime.fromisoformat(created), uuid.UUID(request_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this service issued") from exc


async def get_request(session: AsyncSession, request_id: uuid.UUID) -> DeletionRequest | None:
    return await session.get(DeletionRequest, request_id)


async def get_request_fresh(session: AsyncSession, request_id: uuid.UUID) -> DeletionRequest | None:
    """The request as the database has it now (not the session's possibly stale copy)."""
    return await session.get(DeletionRequest, request_id, populate_existing=True)


_REQUEST_WITH_TASKS = (
    sa.select(DeletionRequest)
    .options(joinedload(DeletionRequest.tasks))
    .where(DeletionRequest.id == sa.bindparam("request_id"))
    .execution_options(populate_existing=True)
)
_REQUESTS = cast(sa.Table, DeletionRequest.__table__)
# The same as rows (driver SQL): the request's columns, then its tasks' (outer join);
# REQUEST_LOADER makes them into objects (a request's rows next to each other).
REQUEST_LOADER = driver.Loader.of(DeletionRequest, DeletionTask, "tasks")
REQUESTS_WITH_TASKS = REQUEST_LOADER.select().select_from(
    _REQUESTS.outerjoin(TASKS, TASKS.c.request_id == _REQUESTS.c.id)
)
_REQUEST_WITH_TASKS_ROWS = REQUESTS_WITH_TASKS.where(
    _REQUESTS.c.id == sa.bindparam("request_id")
).order_by(TASKS.c.position)


async def get_request_with_tasks(
    session: AsyncSession, request_id: uuid.UUID
) -> DeletionRequest | None:
    """The request as the database has it now, with its tasks (in plan order): one
    statement (the worker settling a request; driver SQL in a transaction that
    :func:`driver.begin` began)."""
    raw = driver.of(session)
    if raw is not None:
        rows = await driver.fetch(
            raw, driver.compiled(_REQUEST_WITH_TASKS_ROWS), {"request_id": request_id}
        )
        found = REQUEST_LOADER.load(rows)
        return found[0] if found else None
    result = await session.execute(_REQUEST_WITH_TASKS, {"request_id": request_id})
    return result.unique().scalar_one_or_none()


async def get_request_by_code(session: AsyncSession, code: str) -> DeletionRequest | None:
    result = await session.execute(
        sa.select(DeletionRequest).where(DeletionRequest.confirmation_code == code)
    )
    return result.scalar_one_or_none()


async def get_request_by_idempotency_key(
    session: AsyncSession, requested_by: str, key: str
) -> DeletionRequest | None:
    result = await session.execute(
        sa.select(DeletionRequest).where(
            DeletionRequest.requested_by == requested_by,
            DeletionRequest.idempotency_key == key,
        )
    )
    return result.scalar_one_or_none()


async def get_open_request_for_subject(
    session: AsyncSession,
    kind: RequestKind,
    subject_key: str,
    statuses: frozenset[RequestStatus] = VERIFIED_OPEN_STATUSES,
) -> DeletionRequest | None:
    """The open request of this kind for this subject in one of ``statuses`` (by default
    the verified ones, ``pending``/``running``); a verified one first when there are
    several (one verified and unverified ones filed from e-mail)."""
    result = await session.execute(
        sa.select(DeletionRequest)
        .where(
            DeletionRequest.kind == kind,
            DeletionRequest.subject_key == subject_key,
            DeletionRequest.status.in_(statuses),
        )
        .order_by(sa.case((DeletionRequest.status.in_(VERIFIED_OPEN_STATUSES), 0), else_=1))
        .limit(1)
    )
    return result.scalars().first()


async def list_requests(
    session: AsyncSession,
    filters: RequestFilter,
    *,
    limit: int,
    cursor: str | None = None,
    now: datetime | None = None,
) -> tuple[Sequence[DeletionRequest], str | None]:
    query = sa.select(DeletionRequest)
    if filters.status is not None:
        query = query.where(DeletionRequest.status == filters.status)
    if filters.kind is not None:
        query = query.where(DeletionRequest.kind == filters.kind)
    if filters.overdue:
        query = query.where(
            DeletionRequest.status.in_(OPEN_STATUSES), DeletionRequest.due_at < (now or utcnow())
        )
    if filters.subject_hash is not None:
        query = query.where(
            DeletionRequest.id.in_(
                sa.select(SubjectHash.request_id).where(SubjectHash.hash == filters.subject_hash)
            )
        )
    if cursor:
        created, request_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                DeletionRequest.created_at < created,
                sa.and_(DeletionRequest.created_at == created, DeletionRequest.id < request_id),
            )
        )
    query = query.order_by(DeletionRequest.created_at.desc(), DeletionRequest.id.desc())
    rows = (await session.execute(query.limit(limit + 1))).scalars().all()
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def transition_request(
    session: AsyncSession,
    request_id: uuid.UUID,
    *,
    from_statuses: frozenset[RequestStatus],
    to_status: RequestStatus,
    values: RequestChanges | None = None,
) -> bool:
    """Change a request's status only if it is still in one of ``from_statuses``.

    A conditional UPDATE, so that two actors (an operator cancelling, a worker
    claiming) can never both win.
    """
    result = await session.execute(
        sa.update(DeletionRequest)
        .where(DeletionRequest.id == request_id, DeletionRequest.status.in_(from_statuses))
        .values(status=to_status, updated_at=utcnow(), **(values or {}))
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# Built once (bound values as parameters): the worker's hot path. The SET clause comes
# from the parameters' keys; ``updated_at`` is set by its ``onupdate``.
_SET_VALUES = sa.update(cast(sa.Table, DeletionRequest.__table__)).where(
    cast(sa.Table, DeletionRequest.__table__).c.id == sa.bindparam("request_id")
)
_HASHES_OF = sa.select(cast(sa.Table, SubjectHash.__table__).c.hash).where(
    cast(sa.Table, SubjectHash.__table__).c.request_id == sa.bindparam("request_id")
)
_ADD_HASHES = sa.insert(cast(sa.Table, SubjectHash.__table__))


async def set_values(
    session: AsyncSession, request_id: uuid.UUID, **values: Unpack[RequestChanges]
) -> None:
    """Write columns of a request (Core, on the session's connection: nothing in the
    session is synchronised; driver SQL in a transaction that :func:`driver.begin` began)."""
    params = {**values, "request_id": request_id}
    raw = driver.of(session)
    if raw is not None:
        await driver.execute(raw, driver.compiled(_SET_VALUES, list(values)), params)
        return
    connection = await session.connection()
    await connection.execute(_SET_VALUES, params)


async def add_subject_hashes(
    session: AsyncSession, request_id: uuid.UUID, hashes: set[str]
) -> bool:
    """Add the hashes the request does not have yet, at once (a hold check later in the
    transaction sees them); whether any was new."""
    if not hashes:
        return False
    connection = await session.connection()
    existing = set((await connection.execute(_HASHES_OF, {"request_id": request_id})).scalars())
    new = sorted(hashes - existing)
    if new:
        await connection.execute(
            _ADD_HASHES, [{"request_id": request_id, "hash": value} for value in new]
        )
    return bool(new)


async def replace_subject_hashes(
    session: AsyncSession, request_id: uuid.UUID, hashes: set[str]
) -> None:
    """The request's subject was replaced: look-ups must find the new one, not the old."""
    await session.execute(
        sa.delete(SubjectHash)
        .where(SubjectHash.request_id == request_id)
        .execution_options(synchronize_session=False)
    )
    for value in sorted(hashes):
        session.add(SubjectHash(request_id=request_id, hash=value))


async def deadline_candidates(
    session: AsyncSession, now: datetime, warn_before: timedelta
) -> tuple[Sequence[uuid.UUID], Sequence[uuid.UUID]]:
    """Open requests newly within ``warn_before`` of their due date, and newly overdue."""
    near = await session.execute(
        sa.select(DeletionRequest.id).where(
            DeletionRequest.status.in_(OPEN_STATUSES),
            DeletionRequest.deadline_warned_at.is_(None),
            DeletionRequest.due_at <= now + warn_before,
        )
    )
    overdue = await session.execute(
        sa.select(DeletionRequest.id).where(
            DeletionRequest.status.in_(OPEN_STATUSES),
            DeletionRequest.overdue_warned_at.is_(None),
            DeletionRequest.due_at <= now,
        )
    )
    return near.scalars().all(), overdue.scalars().all()


async def mark_deadline(
    session: AsyncSession,
    request_id: uuid.UUID,
    column: Literal["deadline_warned_at", "overdue_warned_at"],
    now: datetime,
) -> bool:
    """Set a request's deadline mark, only if it is unset: of several workers that saw the
    same deadline, exactly one records it."""
    mark = getattr(DeletionRequest, column)
    result = await session.execute(
        sa.update(DeletionRequest)
        .where(DeletionRequest.id == request_id, mark.is_(None))
        .values({column: now})
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# --- intake: a new request in a few statements, without the ORM's unit of work ------

# A conflict with a unique index (one Idempotency-Key per caller, one open request per
# kind and subject) inserts nothing instead of failing the transaction (ON CONFLICT DO
# NOTHING, here and in the PostgreSQL statement below).
_INSERT_REQUEST = {"sqlite": sqlite.insert(_REQUESTS).on_conflict_do_nothing()}
_INSERT_TASKS = sa.insert(cast(sa.Table, DeletionTask.__table__))
_INSERT_HASHES = sa.insert(cast(sa.Table, SubjectHash.__table__))
_INSERT_EVENT = sa.insert(cast(sa.Table, DeletionEvent.__table__))


def _no_default(column: str) -> Any:
    raise TypeError(f"{column} has a default that intake cannot compute")


@functools.cache
def _column_defaults(model: type[Base]) -> tuple[tuple[str, str, Callable[[], Any]], ...]:
    """Per column of a model: attribute, column key, and how to make its Python default
    (computed once per model: intake builds rows for every request)."""
    plan: list[tuple[str, str, Callable[[], Any]]] = []
    for prop in sa.inspect(model).column_attrs:
        column = prop.columns[0]
        default = column.default
        make: Callable[[], Any]
        if isinstance(default, CallableColumnDefault):
            make = functools.partial(default.arg, cast(Any, None))
        elif isinstance(default, ScalarElementColumnDefault):
            make = functools.partial(lambda value: value, default.arg)
        elif default is None and column.server_default is None:
            make = functools.partial(lambda: None)
        else:  # pragma: no cover - no such column in the models
            make = functools.partial(_no_default, str(column))
        plan.append((prop.key, column.key, make))
    return tuple(plan)


def _new_row(obj: Base) -> dict[str, Any]:
    """Every column of a new ORM object as an INSERT stores it: the values given, each
    column's Python default where none was (set on the object too, as a flush does)."""
    row: dict[str, Any] = {}
    given = obj.__dict__
    for key, column_key, make in _column_defaults(type(obj)):
        if key in given:
            value = given[key]
        else:
            value = make()
            setattr(obj, key, value)
        row[column_key] = value
    return row


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} cannot go into a JSON record")


def _record(value: Any) -> str:
    return json.dumps(value, default=_json_value, separators=(",", ":"))


# One statement for the legal-hold check and all four tables: every row goes as a JSON
# document that PostgreSQL turns into the table's own row type, so the statement names no
# column of its own. A subject under an active hold is filed ``on_hold`` (the request row
# patched by "on_hold", the events of "held_events" instead of "events"; all of them in
# one JSON document, $2, parsed once; the request's null columns left out). One statement is
# atomic on its own: intake runs it in autocommit, one round-trip in all.
_POSTGRES_INTAKE_SQL = """
WITH doc AS (
    SELECT CAST($2 AS JSONB) AS d
), held AS (
    SELECT EXISTS (
        SELECT 1 FROM {hold_hashes} h JOIN {holds} l ON l.id = h.hold_id
        WHERE l.released_at IS NULL AND h.hash = ANY(CAST($1 AS VARCHAR[]))
    ) AS held
), new AS (
    INSERT INTO {requests}
    SELECT r.* FROM doc, held, jsonb_populate_record(
        NULL::{requests},
        CASE WHEN held.held THEN (doc.d -> 'request') || (doc.d -> 'on_hold')
        ELSE doc.d -> 'request' END
    ) r
    ON CONFLICT DO NOTHING RETURNING id
), tasks AS (
    INSERT INTO {tasks}
    SELECT t.* FROM new, doc, jsonb_populate_recordset(NULL::{tasks}, doc.d -> 'tasks') t
), hashes AS (
    INSERT INTO {hashes}
    SELECT h.* FROM new, doc, jsonb_populate_recordset(NULL::{hashes}, doc.d -> 'hashes') h
), events AS (
    INSERT INTO {events} ({event_columns})
    SELECT {event_columns} FROM new, doc, held, jsonb_populate_recordset(
        NULL::{events},
        CASE WHEN held.held THEN doc.d -> 'held_events' ELSE doc.d -> 'events' END
    )
)
SELECT (SELECT count(*) FROM new) AS stored, (SELECT held FROM held) AS held
"""


async def _is_held(connection: AsyncConnection, hashes: set[str]) -> bool:
    """Whether an active hold has one of these identity hashes (the check above)."""
    if not hashes:
        return False
    active = (
        sa.select(LegalHoldHash.hash)
        .join(LegalHold, LegalHold.id == LegalHoldHash.hold_id)
        .where(LegalHold.released_at.is_(None), LegalHoldHash.hash.in_(sorted(hashes)))
    )
    return (await connection.execute(active.limit(1))).first() is not None


def _postgres_intake() -> str:
    events = cast(sa.Table, DeletionEvent.__table__)
    names = {
        "requests": _REQUESTS.name,
        "tasks": DeletionTask.__tablename__,
        "hashes": SubjectHash.__tablename__,
        "events": events.name,
        "event_columns": ", ".join(c.name for c in events.columns if c.name != "id"),
        "holds": LegalHold.__tablename__,
        "hold_hashes": LegalHoldHash.__tablename__,
    }
    # Only the models' own table and column names go into the text, never a value. Run
    # as the driver's SQL with positional parameters: nothing to compile per request.
    return _POSTGRES_INTAKE_SQL.format(**names)


_POSTGRES_INTAKE = _postgres_intake()


@functools.cache
def _row_template(
    model: type[Base],
) -> tuple[dict[str, Any], tuple[tuple[str, str, Callable[[], Any]], ...], dict[str, str]]:
    """A model's new row in parts (computed once): the columns whose default is one
    immutable value (or none), made once; the columns whose default is made per row (an
    id, a time, an empty dict); every column key by attribute name."""
    fixed: dict[str, Any] = {}
    per_row: list[tuple[str, str, Callable[[], Any]]] = []
    for prop, (key, column_key, make) in zip(
        sa.inspect(model).column_attrs, _column_defaults(model), strict=True
    ):
        default = prop.columns[0].default
        if default is None or isinstance(default, ScalarElementColumnDefault):
            value = make()
            if value is None or isinstance(value, int | str):  # enums are str here
                fixed[column_key] = value
                continue
        per_row.append((key, column_key, make))
    keys = {key: column_key for key, column_key, _ in _column_defaults(model)}
    return fixed, tuple(per_row), keys


def new_row(model: type[Base], values: dict[str, Any]) -> dict[str, Any]:
    """Every column of a new row of ``model`` as an INSERT stores it: the values given (by
    attribute name), each column's Python default where none was."""
    fixed, per_row, keys = _row_template(model)
    row = fixed.copy()
    for key, column_key, make in per_row:
        if key not in values:
            row[column_key] = make()
    for key, value in values.items():
        given = keys.get(key)
        if given is not None:
            row[given] = value
    return row


async def insert_new_request(
    db: AsyncSession | AsyncConnection,
    request: DeletionRequest,
    subject_hashes: set[str],
    *,
    actor: str,
    detail: dict[str, Any],
    held_event: str | None = None,
) -> bool:
    """:func:`insert_request_rows` for a request built as ORM objects. When stored, the
    request and its tasks are left as a committed session leaves what it added: detached,
    with every column loaded (and the status it was filed with)."""
    request_row = _new_row(request)
    for task in request.tasks:
        task.request_id = request.id
    task_rows = [_new_row(task) for task in request.tasks]
    stored = await insert_request_rows(
        db, request_row, task_rows, subject_hashes, actor=actor, detail=detail,
        held_event=held_event,
    )  # fmt: skip
    if not stored:
        return False
    request.status, request.run_after = request_row["status"], request_row["run_after"]
    for obj in (request, *request.tasks):
        make_transient_to_detached(obj)
    return True


async def insert_request_rows(
    db: AsyncSession | AsyncConnection | DriverConnection,
    request_row: dict[str, Any],
    task_rows: list[dict[str, Any]],
    subject_hashes: set[str],
    *,
    actor: str,
    detail: dict[str, Any],
    held_event: str | None = None,
) -> bool:
    """Store a new request (its row, from :func:`new_row`) with its tasks, its subject
    hashes and its ``created`` event, without the ORM's flush and read-back: one statement
    on PostgreSQL, a few on SQLite. ``db``: a session (its transaction; the caller
    commits) or a connection (PostgreSQL in autocommit, or the driver's own connection,
    app.db.DriverConnection: the one statement is the transaction).

    ``held_event``: when given, a subject under an active legal hold (by its identity
    hashes) is filed ``on_hold`` instead, with no ``run_after`` (``request_row`` says so
    afterwards), and its log gets an event of this type after the ``created`` one;
    ``detail["status"]`` of the ``created`` event is the status filed.

    False, with nothing written, when the request conflicts with a stored one (the unique
    indexes above decide, also against a concurrent transaction).
    """
    connection = await db.connection() if isinstance(db, AsyncSession) else db
    dialect = "postgresql" if isinstance(connection, DriverConnection) else connection.dialect.name
    # On PostgreSQL every row goes as JSON: the request's id as text once, not once a row.
    request_id = str(request_row["id"]) if dialect == "postgresql" else request_row["id"]
    for task_row in task_rows:
        task_row["request_id"] = request_id
    hash_rows = [{"request_id": request_id, "hash": value} for value in sorted(subject_hashes)]
    created = {
        "request_id": request_id,
        "type": "created",
        "actor": actor,
        "purger": None,
        "detail": {**detail, "status": str(request_row["status"])},
        "at": utcnow(),
    }
    on_hold = {"status": RequestStatus.on_hold.value, "run_after": None}
    held_events = [
        {**created, "detail": {**detail, "status": on_hold["status"]}},
        {**created, "type": held_event, "detail": {}},
    ]
    if dialect == "postgresql":
        params = (
            sorted(subject_hashes) if held_event else [],
            _record(
                {
                    "request": {k: v for k, v in request_row.items() if v is not None},
                    "on_hold": on_hold,
                    "tasks": task_rows,
                    "hashes": hash_rows,
                    "events": [created],
                    "held_events": held_events,
                }
            ),
        )
        if isinstance(connection, DriverConnection):
            stored, held = await connection.fetchrow(_POSTGRES_INTAKE, *params)
        else:
            row = (await connection.exec_driver_sql(_POSTGRES_INTAKE, params)).one()
            stored, held = tuple(row)
        if not stored:
            return False
        held = bool(held)
    else:
        assert not isinstance(connection, DriverConnection)
        held = held_event is not None and await _is_held(connection, subject_hashes)
        insert_row = {**request_row, **on_hold} if held else request_row
        result = await connection.execute(_INSERT_REQUEST[dialect], insert_row)
        if not result.rowcount:
            return False
        if task_rows:
            await connection.execute(_INSERT_TASKS, task_rows)
        if hash_rows:
            await connection.execute(_INSERT_HASHES, hash_rows)
        await connection.execute(_INSERT_EVENT, held_events if held else [created])
    if held:
        request_row.update(status=RequestStatus.on_hold, run_after=None)
    return True
