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
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app import repository
from app.datamap import Selection
from app.models import DeletionRequest, RequestKind, RequestSource, RequestStatus, utcnow
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


def new_confirmation_code() -> str:
    """CODE_LENGTH characters of CODE_ALPHABET, uniformly random: the base-62 digits of one
    random number below 62**CODE_LENGTH (one draw instead of one per character)."""
    number = secrets.randbelow(len(CODE_ALPHABET) ** CODE_LENGTH)
    digits = []
    for _ in range(CODE_LENGTH):
        number, digit = divmod(number, len(CODE_ALPHABET))
        digits.append(CODE_ALPHABET[digit])
    return "".join(digits)


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


def build(command: NewDeletion, *, hash_key: bytes, deadline_days: int) -> DeletionRequest:
    """The request a command files, with its tasks (not stored)."""
    now = utcnow()
    email = command.email
    request = DeletionRequest(
        id=uuid.uuid4(),
        kind=command.kind,
        status=command.status,
        source=command.source,
        requested_by=command.requested_by,
        subject=command.identities,
        subject_key=subject_key(hash_key, command.kind, command.identities),
        notify_email=command.notify_email,
        reason=command.reason,
        idempotency_key=(
            idempotency_hash(hash_key, command.idempotency_key)
            if command.idempotency_key is not None
            else None
        ),
        request_fingerprint=command.fingerprint,
        confirmation_code=new_confirmation_code(),
        created_at=now,
        updated_at=now,
        due_at=now + timedelta(days=deadline_days),
        # Unverified requests are no work for a worker until confirmed or approved.
        run_after=now if command.status is RequestStatus.pending else None,
        pinned=command.pinned.model_dump() if command.pinned is not None else None,
    )
    if email is not None:
        request.message_id_hash = email.message_id_hash
        request.confirm_token_hash = email.confirm_token_hash
        request.confirm_expires_at = (
            now + email.confirm_ttl if email.confirm_ttl is not None else None
        )
        request.review_reason = email.review_reason
        request.confirm_recipients = list(email.recipients) or None
        request.review = email.review.model_dump(mode="json") if email.review is not None else None
    request.tasks = [
        repository.new_task(step.purger, position, [p.value for p in step.after])
        for position, step in enumerate(plan_for(command.kind))
    ]
    return request


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
    review_reason = command.email.review_reason if command.email is not None else None
    stored = await repository.insert_new_request(
        db,
        request,
        identity_hashes(hash_key, command.identities),
        actor=command.requested_by,
        detail={
            "kind": command.kind.value,
            "source": command.source.value,
            "status": str(request.status),
            **({"review_reason": review_reason} if review_reason else {}),
        },
        # A legal hold on the subject: the request is filed, and waits (services/holds.py).
        held_event=HELD_EVENT if command.status is RequestStatus.pending else None,
    )
    return request if stored else None
