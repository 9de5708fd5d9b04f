"""The service's own tables: deletion requests, their per-purger tasks and an event log.

The request table is also the durable work queue (see ``app/services/execution/``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class RequestKind(StrEnum):
    """What a request deletes: `account` (a whole SoundOps account and everything it
    owns), `meta_data` (everything SoundOps received from Facebook or Instagram about one
    person or account) or `instagram_disconnect` (one Instagram connection of one tenant)."""

    account = "account"
    meta_data = "meta_data"
    instagram_disconnect = "instagram_disconnect"


class RequestStatus(StrEnum):
    """Where a request is: `awaiting_confirmation` (from e-mail, waiting for the one-time
    link), `needs_review` (waiting for an operator), `pending` (verified, waiting for a
    worker), `running`, and the final `completed` (every store verified), `failed` (a
    store failed for good; an operator may retry) and `cancelled`."""

    awaiting_confirmation = "awaiting_confirmation"
    needs_review = "needs_review"
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    # A legal hold on the subject: waits (not overdue, never claimed) until released.
    on_hold = "on_hold"


OPEN_STATUSES = frozenset(
    {
        RequestStatus.awaiting_confirmation,
        RequestStatus.needs_review,
        RequestStatus.pending,
        RequestStatus.running,
    }
)
# Open and verified (by a caller's token, Meta's signature, a confirmation link or a
# reviewer): the deletion will run (once its legal hold is released, when on hold). Open but
# unverified: waiting for the link or a reviewer. On hold is not "open" for deadlines.
VERIFIED_OPEN_STATUSES = frozenset(
    {RequestStatus.pending, RequestStatus.running, RequestStatus.on_hold}
)
UNVERIFIED_STATUSES = frozenset({RequestStatus.awaiting_confirmation, RequestStatus.needs_review})
CANCELLABLE_STATUSES = frozenset(
    {RequestStatus.pending, RequestStatus.awaiting_confirmation, RequestStatus.needs_review}
)

# The reasons the service writes itself on a cancelled request (``status_reason``). Any
# other reason was typed by an operator and gives way to the plain fact at minimisation.
CANCELLED_REASON = "cancelled by an operator"
REJECTED_REASON = "rejected by an operator"
EXPIRED_REASON = "confirmation link expired"
REVIEW_EXPIRED_REASON = "not reviewed within 30 days"
SERVICE_REASONS = frozenset(
    {CANCELLED_REASON, REJECTED_REASON, EXPIRED_REASON, REVIEW_EXPIRED_REASON}
)


class RequestSource(StrEnum):
    """The channel a request came through. A REST caller declares it (`api` by default,
    `admin_panel`, `email`, `meta_email` for a request Meta forwarded by e-mail); the
    service sets `email` for the privacy@ mailbox and `meta_callback` for Meta's signed
    callbacks."""

    email = "email"
    admin_panel = "admin_panel"
    api = "api"
    meta_email = "meta_email"
    meta_callback = "meta_callback"


class TaskStatus(StrEnum):
    """Where one store's part of a request is: `pending`, `running`, `retrying` (a
    transient error; it runs again later), and the final `succeeded` (deleted and
    verified), `skipped` (nothing to do there, or the store is not part of this
    deployment) and `failed`."""

    pending = "pending"
    running = "running"
    retrying = "retrying"
    succeeded = "succeeded"
    skipped = "skipped"
    failed = "failed"


def utcnow() -> datetime:
    return datetime.now(UTC)


VERIFIED_OPEN_SQL = "status IN ('pending', 'running', 'on_hold')"
NOTIFIED_EVENTS_SQL = "type IN ('failed', 'overdue')"
UNVERIFIED_SQL = "status IN ('awaiting_confirmation', 'needs_review')"


class DeletionRequest(Base):
    __tablename__ = "deletion_requests"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(32), default=RequestStatus.pending)
    source: Mapped[str] = mapped_column(sa.String(32), default=RequestSource.api)
    requested_by: Mapped[str] = mapped_column(sa.String(255))
    # Raw identifiers, needed to carry out the deletion; minimised after completion.
    subject: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # HMAC of kind + canonical subject: dedupe of open requests and later look-ups.
    subject_key: Mapped[str] = mapped_column(sa.String(64))
    notify_email: Mapped[str | None] = mapped_column(sa.String(320))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(sa.String(64))
    confirmation_code: Mapped[str] = mapped_column(sa.String(64), unique=True)
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the subject resolved to before purging: raw ids (wiped when the request is
    # minimised) and their keyed hashes (kept as evidence).
    resolution: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    resolution_digest: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The data map the request was carried out with (named in its receipt).
    datamap_version: Mapped[str | None] = mapped_column(sa.String(64))
    # The signed receipt ({"receipt", "signature"}), made when the request settled to a
    # final status and again when it was minimised; GET returns it as issued. Counts and
    # facts only, no personal data: minimisation keeps it. Plain JSON (not JSONB): kept as
    # it was signed.
    receipt: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    # Confirmations after completion: none | pending | sent | given_up.
    webhook_status: Mapped[str | None] = mapped_column(sa.String(16))
    email_status: Mapped[str | None] = mapped_column(sa.String(16))
    notify_attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    # Raw identifiers replaced by keyed hashes: the request keeps evidence only.
    minimised_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deadline_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    overdue_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Requests by e-mail: a keyed hash of the Message-ID that filed it; the one-time
    # confirmation link (a keyed hash of its token, kept after use so that a used link
    # still says so) and when it expires; why an operator must review it (a short code).
    message_id_hash: Mapped[str | None] = mapped_column(sa.String(64))
    confirm_token_hash: Mapped[str | None] = mapped_column(sa.String(64))
    confirm_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    review_reason: Mapped[str | None] = mapped_column(sa.String(32))
    # The addresses on file the link was mailed to: personal data, removed like notify_email.
    confirm_recipients: Mapped[list[str] | None] = mapped_column(JSONType)
    # The selection a confirmation or a reviewer saw ({"tenant_ids", "account_ids"}): the
    # request never reaches beyond it. What an operator's review shows ({"named",
    # "candidates"}). Both raw identifiers: cleared when the request is minimised.
    pinned: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    review: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Work queue: when the request next needs a worker, and who holds it until when.
    run_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    tasks: Mapped[list[DeletionTask]] = relationship(
        back_populates="request",
        order_by="DeletionTask.position",
        lazy="selectin",
        cascade="all, delete-orphan",
    )

    __table_args__ = (
        sa.Index("ix_deletion_requests_created_at_id", "created_at", "id"),
        sa.Index("ix_deletion_requests_status_due_at", "status", "due_at"),
        sa.Index("ix_deletion_requests_queue", "status", "run_after"),
        sa.Index(
            "uq_deletion_requests_idempotency",
            "requested_by",
            "idempotency_key",
            unique=True,
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
        ),
        # At most one verified open request per kind and subject, enforced by the database;
        # and at most one unverified request per kind, subject and status. The two never
        # collide: an unverified request (a forged e-mail) never stands in for a verified
        # one, so rejecting or expiring it never cancels a real deletion.
        sa.Index(
            "uq_deletion_requests_open_subject",
            "kind",
            "subject_key",
            unique=True,
            postgresql_where=sa.text(VERIFIED_OPEN_SQL),
            sqlite_where=sa.text(VERIFIED_OPEN_SQL),
        ),
        sa.Index(
            "uq_deletion_requests_unverified_subject",
            "kind",
            "subject_key",
            "status",
            unique=True,
            postgresql_where=sa.text(UNVERIFIED_SQL),
            sqlite_where=sa.text(UNVERIFIED_SQL),
        ),
        # One request per e-mail (Message-ID), and confirmation links found by their hash.
        sa.Index(
            "uq_deletion_requests_message_id_hash",
            "message_id_hash",
            unique=True,
            postgresql_where=sa.text("message_id_hash IS NOT NULL"),
            sqlite_where=sa.text("message_id_hash IS NOT NULL"),
        ),
        sa.Index(
            "uq_deletion_requests_confirm_token_hash",
            "confirm_token_hash",
            unique=True,
            postgresql_where=sa.text("confirm_token_hash IS NOT NULL"),
            sqlite_where=sa.text("confirm_token_hash IS NOT NULL"),
        ),
    )


class DeletionTask(Base):
    __tablename__ = "deletion_tasks"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    # No index of its own: the unique (request_id, purger) below leads with it, and serves
    # every look-up by request (and the cascade); intake writes four tasks per request.
    request_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("deletion_requests.id", ondelete="CASCADE")
    )
    purger: Mapped[str] = mapped_column(sa.String(32))
    position: Mapped[int] = mapped_column(sa.Integer, default=0)
    # Purgers that must have finished before this one starts (from the kind's plan).
    after: Mapped[list[str]] = mapped_column(JSONType, default=list)
    status: Mapped[str] = mapped_column(sa.String(16), default=TaskStatus.pending)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    deleted: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    retained: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    request: Mapped[DeletionRequest] = relationship(back_populates="tasks")

    __table_args__ = (sa.UniqueConstraint("request_id", "purger"),)


class DeletionEvent(Base):
    """Append-only log of everything that happened to a request."""

    __tablename__ = "deletion_events"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("deletion_requests.id", ondelete="CASCADE"), index=True
    )
    purger: Mapped[str | None] = mapped_column(sa.String(32))
    type: Mapped[str] = mapped_column(sa.String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str | None] = mapped_column(sa.String(255))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    __table_args__ = (
        # The few events that operators are told of: found without reading the log.
        sa.Index(
            "ix_deletion_events_notified",
            "request_id",
            postgresql_where=sa.text(NOTIFIED_EVENTS_SQL),
            sqlite_where=sa.text(NOTIFIED_EVENTS_SQL),
        ),
    )


class SubjectHash(Base):
    """Keyed hashes of every identity a request named or resolved to: look-ups after
    minimisation ("was this subject deleted?") without keeping the identifiers."""

    __tablename__ = "deletion_subject_hashes"

    request_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("deletion_requests.id", ondelete="CASCADE"), primary_key=True
    )
    hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True, index=True)


class EmailIntake(Base):
    """Every e-mail handled, by a keyed hash of its Message-ID: a message is handled once,
    also when it named a subject that already had an open request (``request_id`` is then
    that request) or filed nothing (``request_id`` is null). Nothing of the message is kept."""

    __tablename__ = "email_intake"

    message_id_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    request_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("deletion_requests.id", ondelete="CASCADE"), index=True
    )
    # What became of it: filed | duplicate | or a code of the caller's (ignored, ...).
    outcome: Mapped[str] = mapped_column(sa.String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EmailReply(Base):
    """When an automatic reply last went to an address (known by a keyed hash only):
    at most one a day per address, so that no mail loop can start."""

    __tablename__ = "email_replies"

    address_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    last_sent_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MetaDeauthorization(Base):
    """A verified deauthorize callback, recorded before it is answered, so that it is never
    lost (the SoundOps database may be down or not configured): the worker expands it into
    ``instagram_disconnect`` requests once it can read the person's connected accounts.

    Keeps only what the expansion needs: the login family, Meta's app-scoped ``user_id``
    (removed once expanded; its keyed hash stays as evidence) and ``issued_at``.
    ``replay_key`` (a keyed hash of the family and the decoded signature) makes the same
    callback delivered again the same record."""

    __tablename__ = "meta_deauthorizations"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    replay_key: Mapped[str] = mapped_column(sa.String(64), unique=True)
    family: Mapped[str] = mapped_column(sa.String(16))
    user_id: Mapped[str | None] = mapped_column(sa.String(64))
    user_hash: Mapped[str] = mapped_column(sa.String(64))
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Work queue: when a worker should (next) try to expand it, under a lease; cleared
    # once expanded.
    run_after: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    # The outcome: when, how many disconnects were filed, how many accounts were left
    # alone because they were connected again after the callback was issued.
    expanded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disconnects: Mapped[int | None] = mapped_column(sa.Integer)
    skipped_reconnected: Mapped[int | None] = mapped_column(sa.Integer)


class LegalHold(Base):
    """A legal hold on a subject: its requests wait in ``on_hold`` until it is released.

    Matching is by keyed hashes (``LegalHoldHash``), the same as ``deletion_subject_hashes``
    hold for requests. ``subject`` holds the raw identities only while the hold is active
    (an operator must see whom it holds); on release they become keyed hashes and the
    operator's ``reason`` (free text that may name the person) goes, as at minimisation."""

    __tablename__ = "legal_holds"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    subject: Mapped[dict[str, Any]] = mapped_column(JSONType)
    reason: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(255))
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    released_by: Mapped[str | None] = mapped_column(sa.String(255))

    __table_args__ = (sa.Index("ix_legal_holds_created_at_id", "created_at", "id"),)


class LegalHoldHash(Base):
    """The keyed hash of one identity of a hold (``identity=value``, as requests hash)."""

    __tablename__ = "legal_hold_hashes"

    hold_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("legal_holds.id", ondelete="CASCADE"), primary_key=True
    )
    hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True, index=True)


class OperatorNotice(Base):
    """A notice to the operators (``deletion.failed``, ``deletion.overdue``) about one
    event of a request's log (its ``failed`` or ``overdue`` event): one notice per event,
    enforced by the unique ``event_id``, so that no restart or second worker sends it
    twice (a request retried by an operator that fails again has a new ``failed`` event,
    and so a new notice). Delivered under a lease by whoever gets to it, retried with the
    completion webhook's backoff until every channel took it. ``payload`` is what is
    sent: facts about the request, never personal data."""

    __tablename__ = "operator_notices"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    request_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("deletion_requests.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        sa.ForeignKey("deletion_events.id", ondelete="CASCADE"),
        unique=True,
    )
    event: Mapped[str] = mapped_column(sa.String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON())
    # Per channel: None (not configured when the notice was made) | pending | sent.
    email_status: Mapped[str | None] = mapped_column(sa.String(16))
    webhook_status: Mapped[str | None] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Work queue: when a worker should (next) try to deliver it; None once done.
    run_after: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ServiceLease(Base):
    """A named, expiring lease on a job that one worker at a time may run (the retention
    sweep): taken when free or expired, renewed by its owner while it works, released
    when it is done. A crashed owner's lease expires, and another worker takes it."""

    __tablename__ = "service_leases"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(255))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
