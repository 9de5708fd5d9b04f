"""Requests by REST (and Meta's callbacks): intake, reading, cancel, retry, receipts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import repository
from app.db import DriverConnection
from app.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable
from app.models import (
    CANCELLABLE_STATUSES,
    CANCELLED_REASON,
    OPEN_STATUSES,
    DeletionRequest,
    RequestKind,
    RequestStatus,
    utcnow,
)
from app.services.evidence import receipts
from app.services.intake.command import (
    FiledRequest,
    NewDeletion,
    file,
    idempotency_hash,
    subject_key,
)
from app.services.target import TargetDirectory, TargetUnavailable
from app.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Intake:
    """A filing's outcome: the new request as stored, or the existing one it named."""

    request: DeletionRequest | FiledRequest
    created: bool


class RequestService:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        hash_key: bytes,
        directory: TargetDirectory | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessionmaker
        self._hash_key = hash_key
        self._directory = directory
        self._receipt_key = receipts.private_key(settings)
        # Intake's one statement on PostgreSQL needs no transaction around it: it runs on
        # the driver's connection (a pooled one), without SQLAlchemy's Connection.
        engine = sessionmaker.kw.get("bind")
        self._postgres = (
            engine
            if isinstance(engine, AsyncEngine) and engine.dialect.name == "postgresql"
            else None
        )

    def status_url(self, request: DeletionRequest | FiledRequest) -> str:
        return f"{self._settings.public_base_url}/deletion-status/{request.confirmation_code}"

    async def create(self, command: NewDeletion, *, owner_known: bool = False) -> Intake:
        """File a request from REST or Meta (``pending``): a new one, or the one a replayed
        Idempotency-Key names, or the open request of the same kind for the same subject.

        ``owner_known``: the caller read the disconnect's tenant and account from the
        SoundOps database itself (a deauthorization's expansion), so the account's owner
        is not checked again. Never set from what a caller sent."""
        kind = command.kind
        key = subject_key(self._hash_key, kind, command.identities)
        idempotency_key = (
            idempotency_hash(self._hash_key, command.idempotency_key)
            if command.idempotency_key is not None
            else None
        )
        find = partial(
            self._find_existing,
            kind=kind,
            key=key,
            requested_by=command.requested_by,
            idempotency_key=idempotency_key,
            body_fingerprint=command.fingerprint,
        )
        if kind is RequestKind.instagram_disconnect and not owner_known:
            # The ownership check reads the SoundOps database: only for a request that is
            # neither a replay nor a duplicate, so look for those first.
            async with self._sessions() as session:
                existing = await find(session)
            if existing is not None:
                return Intake(existing, created=False)
            await self._check_ownership(command.identities)

        # Insert first: the unique indexes (one Idempotency-Key per caller, one open
        # request per kind and subject) decide, also against a concurrent identical
        # request; only when one of them refuses is the existing request read. On
        # PostgreSQL one statement in autocommit (the hold check and every row of the
        # request), elsewhere one transaction.
        request = await self._insert(command, key)
        if request is None:
            async with self._sessions() as session:
                existing = await find(session)
            if existing is None:
                # The request it conflicted with closed in between (or random ids
                # collided): nothing was stored, the same call again will store it.
                raise ServiceUnavailable(
                    "The request could not be stored; retry it.", headers={"Retry-After": "1"}
                )
            return Intake(existing, created=False)
        log.info("request_created", request_id=str(request.id), kind=kind.value)
        return Intake(request, created=True)

    async def _insert(self, command: NewDeletion, key: str) -> FiledRequest | None:
        deadline_days = self._settings.deadline_days
        if self._postgres is not None:
            async with DriverConnection(self._postgres) as connection:
                return await file(
                    connection,
                    command,
                    hash_key=self._hash_key,
                    deadline_days=deadline_days,
                    key=key,
                )
        async with self._sessions() as session:
            request = await file(
                session, command, hash_key=self._hash_key, deadline_days=deadline_days, key=key
            )
            if request is not None:
                await session.commit()
            return request

    async def _find_existing(
        self,
        session: AsyncSession,
        *,
        kind: RequestKind,
        key: str,
        requested_by: str,
        idempotency_key: str | None,
        body_fingerprint: str | None,
    ) -> DeletionRequest | None:
        """The request a replayed Idempotency-Key names (a different body is a conflict),
        else the open request of the same kind for the same subject."""
        if idempotency_key is not None:
            replay = await repository.get_request_by_idempotency_key(
                session, requested_by, idempotency_key
            )
            if replay is not None:
                if replay.request_fingerprint != body_fingerprint:
                    raise Conflict(
                        "This Idempotency-Key was used with a different body; "
                        "use a new key for a new request."
                    )
                return replay
        return await repository.get_open_request_for_subject(session, kind, key)

    async def _check_ownership(self, identities: dict[str, str]) -> None:
        if self._directory is None:
            return  # No target database configured: the postgres task will be skipped.
        try:
            owned = await self._directory.account_belongs_to_tenant(
                uuid.UUID(identities["tenant_id"]), uuid.UUID(identities["instagram_account_id"])
            )
        except TargetUnavailable as exc:
            raise ServiceUnavailable(
                "The SoundOps database could not be reached to check the account; retry later.",
                headers={"Retry-After": "30"},
            ) from exc
        if not owned:
            raise NotFound("No such Instagram account for this tenant.")

    async def get(self, request_id: uuid.UUID) -> DeletionRequest:
        async with self._sessions() as session:
            request = await repository.get_request(session, request_id)
        if request is None:
            raise NotFound("No deletion request with this id.")
        return request

    async def get_by_code(self, code: str) -> DeletionRequest | None:
        async with self._sessions() as session:
            return await repository.get_request_by_code(session, code)

    async def team_alerted(self, request: DeletionRequest) -> bool:
        """Whether the operators were told of this failed request's latest failure (a
        notice delivered by e-mail or webhook): what the status page may claim."""
        if request.status != RequestStatus.failed:
            return False
        async with self._sessions() as session:
            return await repository.failure_notice_delivered(session, request.id)

    async def list(
        self,
        filters: repository.RequestFilter,
        *,
        limit: int,
        cursor: str | None,
        now: datetime | None = None,
    ) -> tuple[Sequence[DeletionRequest], str | None]:
        async with self._sessions() as session:
            try:
                return await repository.list_requests(
                    session, filters, limit=limit, cursor=cursor, now=now
                )
            except repository.InvalidCursor as exc:
                raise Unprocessable("The cursor is not valid; start again without it.") from exc

    async def cancel(
        self, request_id: uuid.UUID, *, actor: str, reason: str | None
    ) -> DeletionRequest:
        async with self._sessions() as session:
            request = await repository.get_request(session, request_id)
            if request is None:
                raise NotFound("No deletion request with this id.")
            current = request.status
            changed = await repository.transition_request(
                session,
                request_id,
                from_statuses=CANCELLABLE_STATUSES,
                to_status=RequestStatus.cancelled,
                # A worker then minimises what the request keeps.
                values={
                    "status_reason": reason or CANCELLED_REASON,
                    "run_after": utcnow(),
                },
            )
            if not changed:
                await session.rollback()
                raise Conflict(
                    f"A {current} request cannot be cancelled; "
                    "only pending or unconfirmed requests can."
                )
            repository.add_event(session, request_id, "cancelled", actor=actor)
            await session.commit()
        return await self.get(request_id)

    async def retry(self, request_id: uuid.UUID, *, actor: str) -> DeletionRequest:
        """Re-queue a failed request: its failed tasks start again with fresh attempts."""
        async with self._sessions() as session:
            request = await repository.get_request(session, request_id)
            if request is None:
                raise NotFound("No deletion request with this id.")
            current = request.status
            now = utcnow()
            changed = await repository.transition_request(
                session,
                request_id,
                from_statuses=frozenset({RequestStatus.failed}),
                to_status=RequestStatus.pending,
                # The failed run's receipt goes; a run to the end makes a new one.
                values={
                    "status_reason": None,
                    "run_after": now,
                    "completed_at": None,
                    "receipt": None,
                },
            )
            if not changed:
                await session.rollback()
                raise Conflict(f"A {current} request cannot be retried; only failed ones can.")
            retried = await repository.reset_failed_tasks(session, request_id)
            repository.add_event(
                session, request_id, "retried", actor=actor, detail={"tasks": retried}
            )
            await session.commit()
        return await self.get(request_id)

    async def receipt(self, request_id: uuid.UUID) -> dict[str, Any]:
        """The signed receipt of a finished request, as it was issued when the request
        settled or was minimised. Only one that has none stored (cancelled and not yet
        minimised, or finished before receipts were stored) gets one made now."""
        async with self._sessions() as session:
            request = await repository.get_request(session, request_id)
            if request is None:
                raise NotFound("No deletion request with this id.")
            if request.status in OPEN_STATUSES | {RequestStatus.on_hold}:
                raise Conflict(f"A {request.status} request has no receipt yet.")
            if request.receipt is not None:
                return request.receipt
            tasks = list(await repository.get_tasks(session, request_id))
        receipt = receipts.build(request, tasks, self._settings.backup_retention_days)
        return receipts.sign(receipt, self._receipt_key)

    def backup_horizon(self, request: DeletionRequest) -> receipts.BackupHorizon:
        """The backup horizon that the request's receipt states, for the status page."""
        return receipts.backup_horizon(request.completed_at, self._settings.backup_retention_days)

    def receipt_public_key(self) -> str:
        return receipts.public_key_b64(self._receipt_key.public_key())
