"""One new deletion request, whatever the channel, and the one path that stores it.

REST, Meta's callbacks and e-mail each turn what they received into a ``NewDeletion``;
``insert`` builds the request (its tasks from the plan, its keyed hashes, its deadline)
and stores it through ``repository.insert_new_request``, where the unique indexes decide
against stored and concurrent requests alike.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app import repository
from app.datamap import Selection
from app.db import DriverConnection
from app.models import (
    DeletionRequest,
    DeletionTask,
    RequestKind,
    RequestSource,
    RequestStatus,
    utcnow,
)
from app.pii import keyed_hash
from app.services.holds import HELD_EVENT
from app.services.identities import hashes as identity_hashes
from app.services.plans import plan_for
from app.subjects import Review

CODE_ALPHABET = string.ascii_letters + string.digits
CODE_LENGTH = 32  # 32 x log2(62) = 190 bits: not guessable, not enumerable.


@dataclass(frozen=True)
class EmailFiling:
    """What a request filed from an e-mail carries besides the request itself."""

    message_id_hash: str
    # Awaiting confirmation: the one-time link's keyed hash, how long it works (from
    # the request's creation), and where it goes.
    confirm_token_hash: str | None = None
    confirm_ttl: timedelta | None = None
    recipients: tuple[str, ...] = ()
    # In review: why (a code) and what the operator is shown.
    review_reason: str | None = None
    review: Review | None = None


@dataclass(frozen=True)
class NewDeletion:
    """A request to file: what is to be deleted, for whom, and how it came in.

    ``identities``: the subject in canonical form (``app.subjects``). ``idempotency_key``
    as the caller gave it (only its keyed hash is stored); ``fingerprint``: what a replay
    of that key must match. ``status``: ``pending`` (work for a worker now), or
    ``awaiting_confirmation``/``needs_review`` for an unverified request from e-mail.
    ``pinned``: the tenant (and accounts) the request may never reach beyond.
    """

    kind: RequestKind
    identities: dict[str, str]
    source: RequestSource
    requested_by: str
    fingerprint: str | None = None
    notify_email: str | None = None
    reason: str | None = None
    idempotency_key: str | None = None
    status: RequestStatus = RequestStatus.pending
    pinned: Selection | None = None
    email: EmailFiling | None = None


# Random bytes below 248 (4 x 62) map uniformly onto the alphabet (byte % 62); the others
# are dropped, so every character is uniform and independent (rejection sampling).
_CODE_TABLE = bytes(ord(CODE_ALPHABET[b % len(CODE_ALPHABET)]) for b in range(256))
_CODE_REJECTED = bytes(range(248, 256))


def new_confirmation_code() -> str:
    """CODE_LENGTH characters of CODE_ALPHABET, uniformly random: random bytes mapped in C
    (``bytes.translate``; 1 us instead of 8 us for base-62 digits of one random number)."""
    code = b""
    while len(code) < CODE_LENGTH:
        # 40 bytes keep 32 or more with probability > 0.999; else draw again.
        code += secrets.token_bytes(40).translate(_CODE_TABLE, _CODE_REJECTED)
    return code[:CODE_LENGTH].decode("ascii")


def subject_key(hash_key: bytes, kind: RequestKind, identities: dict[str, str]) -> str:
    canonical = json.dumps(
        {"kind": kind.value, **identities}, sort_keys=True, separators=(",", ":")
    )
    return keyed_hash(hash_key, canonical)


def idempotency_hash(hash_key: bytes, key: str) -> str:
    # Callers choose keys freely (an e-mail, say): keep only a keyed hash of it.
    return keyed_hash(hash_key, f"idempotency-key={key}")


def fingerprint(fields: Mapping[str, Any]) -> str:
    """The digest of what was asked for (a create's body, as JSON)."""
    canonical = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_rows(
    command: NewDeletion, *, hash_key: bytes, deadline_days: int, key: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The rows a command files: its request and its tasks from the plan, every column
    (by column name) as it is stored (not stored here). ``key``: the command's
    :func:`subject_key`, when the caller has it already."""
    now = utcnow()
    email = command.email
    request_id = uuid.uuid4()
    values: dict[str, Any] = {
        "id": request_id,
        "kind": command.kind,
        "status": command.status,
        "source": command.source,
        "requested_by": command.requested_by,
        "subject": command.identities,
        "subject_key": (
            key if key is not None else subject_key(hash_key, command.kind, command.identities)
        ),
        "notify_email": command.notify_email,
        "reason": command.reason,
        "idempotency_key": (
            idempotency_hash(hash_key, command.idempotency_key)
            if command.idempotency_key is not None
            else None
        ),
        "request_fingerprint": command.fingerprint,
        "confirmation_code": new_confirmation_code(),
        "created_at": now,
        "updated_at": now,
        "due_at": now + timedelta(days=deadline_days),
        # Unverified requests are no work for a worker until confirmed or approved.
        "run_after": now if command.status is RequestStatus.pending else None,
        "pinned": command.pinned.model_dump() if command.pinned is not None else None,
    }
    if email is not None:
        values.update(
            message_id_hash=email.message_id_hash,
            confirm_token_hash=email.confirm_token_hash,
            confirm_expires_at=now + email.confirm_ttl if email.confirm_ttl is not None else None,
            review_reason=email.review_reason,
            confirm_recipients=list(email.recipients) or None,
            review=email.review.model_dump(mode="json") if email.review is not None else None,
        )
    tasks = [
        repository.new_row(
            DeletionTask,
            {
                "request_id": request_id,
                "purger": step.purger,
                "position": position,
                "after": [p.value for p in step.after],
                "deleted": {},
                "retained": {},
            },
        )
        for position, step in enumerate(plan_for(command.kind))
    ]
    return repository.new_row(DeletionRequest, values), tasks


def build(command: NewDeletion, *, hash_key: bytes, deadline_days: int) -> DeletionRequest:
    """The request a command files, with its tasks, as ORM objects (not stored)."""
    request_row, task_rows = build_rows(command, hash_key=hash_key, deadline_days=deadline_days)
    request = DeletionRequest(**request_row)
    request.tasks = [DeletionTask(**row) for row in task_rows]
    return request


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and intake
# makes one of these and four tasks per request (nothing changes them after ``of``).
@dataclass(slots=True)
class FiledTask:
    """A task as intake stored it."""

    purger: str
    status: str
    attempts: int
    deleted: dict[str, int]
    retained: dict[str, Any]
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None


@dataclass(slots=True)
class FiledRequest:
    """A request as intake stored it, read from its rows (no ORM object is made for the
    answer to a filing): what a caller is shown of a request, as of a stored one."""

    id: uuid.UUID
    kind: str
    status: str
    source: str
    requested_by: str
    confirmation_code: str
    status_reason: str | None
    review_reason: str | None
    review: dict[str, Any] | None
    created_at: datetime
    due_at: datetime
    completed_at: datetime | None
    tasks: tuple[FiledTask, ...]

    @classmethod
    def of(cls, request: dict[str, Any], tasks: list[dict[str, Any]]) -> FiledRequest:
        return cls(
            id=request["id"],
            kind=request["kind"],
            status=request["status"],
            source=request["source"],
            requested_by=request["requested_by"],
            confirmation_code=request["confirmation_code"],
            status_reason=request["status_reason"],
            review_reason=request["review_reason"],
            review=request["review"],
            created_at=request["created_at"],
            due_at=request["due_at"],
            completed_at=request["completed_at"],
            tasks=tuple(
                FiledTask(
                    purger=t["purger"],
                    status=t["status"],
                    attempts=t["attempts"],
                    deleted=t["deleted"],
                    retained=t["retained"],
                    error=t["error"],
                    started_at=t["started_at"],
                    finished_at=t["finished_at"],
                    next_attempt_at=t["next_attempt_at"],
                )
                for t in tasks
            ),
        )


def _filing(command: NewDeletion) -> tuple[dict[str, Any], str | None]:
    """The ``created`` event's detail, and the event a legal hold adds (pending only)."""
    review_reason = command.email.review_reason if command.email is not None else None
    detail = {
        "kind": command.kind.value,
        "source": command.source.value,
        "status": str(command.status),
        **({"review_reason": review_reason} if review_reason else {}),
    }
    # A legal hold on the subject: the request is filed, and waits (services/holds.py).
    return detail, HELD_EVENT if command.status is RequestStatus.pending else None


async def file(
    db: AsyncSession | AsyncConnection | DriverConnection,
    command: NewDeletion,
    *,
    hash_key: bytes,
    deadline_days: int,
    key: str | None = None,
) -> FiledRequest | None:
    """:func:`insert` without ORM objects: the same rows, stored the same way; the request
    as stored, or None when a unique index refused it. ``key``: as for :func:`build_rows`."""
    request_row, task_rows = build_rows(
        command, hash_key=hash_key, deadline_days=deadline_days, key=key
    )
    detail, held_event = _filing(command)
    stored = await repository.insert_request_rows(
        db,
        request_row,
        task_rows,
        identity_hashes(hash_key, command.identities),
        actor=command.requested_by,
        detail=detail,
        held_event=held_event,
    )
    return FiledRequest.of(request_row, task_rows) if stored else None


async def insert(
    db: AsyncSession | AsyncConnection,
    command: NewDeletion,
    *,
    hash_key: bytes,
    deadline_days: int,
) -> DeletionRequest | None:
    """Store the request a command files, with its tasks, subject hashes and ``created``
    event: in the session's transaction (the caller commits), or on PostgreSQL on an
    autocommit connection (one statement, stored when this returns). None, with nothing
    written, when a unique index refuses it: the same Idempotency-Key or Message-ID, or an
    open request of the same kind for the same subject that it may not stand beside."""
    request = build(command, hash_key=hash_key, deadline_days=deadline_days)
    detail, held_event = _filing(command)
    stored = await repository.insert_new_request(
        db,
        request,
        identity_hashes(hash_key, command.identities),
        actor=command.requested_by,
        detail=detail,
        held_event=held_event,
    )
    return request if stored else None
