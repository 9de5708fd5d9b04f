"""Meta's callbacks: data deletion requests and deauthorizations, verified by signed_request.

No store is touched to answer a data deletion callback: it files a ``meta_data``
request (or finds the one already filed for the same signed_request) and
returns its status URL and confirmation code.

A deauthorization is recorded in the tracking database first (``meta_deauthorizations``)
and only then expanded (at once by the callback, or, in a burst beyond
``INLINE_EXPANSIONS`` callbacks at a time, by the workers, claimed in batches): the
person's connected accounts are looked up in the SoundOps database (one indexed query)
and a disconnect is filed for each one connected before the deauthorization was issued.
When that database is down or not configured the callback is still answered 200 once
recorded, and the worker expands it later (``expand_due``). Each disconnect is filed
under an idempotency key derived from the record, so an expansion repeated after a
crash, or raced by several workers, files each disconnect once.

Replays are known by the decoded signature (``signed_request.verify`` accepts one
spelling per signature), so the same callback delivered again, however re-encoded, gives
the same request and confirmation code, or the same deauthorization record.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import repository
from app.db import DriverConnection, postgres_engine
from app.errors import ServiceUnavailable
from app.models import DeletionRequest, MetaDeauthorization, RequestKind, RequestSource, utcnow
from app.pii import keyed_hash
from app.services.identities import identity_hash
from app.services.intake.command import FiledRequest, NewDeletion, fingerprint
from app.services.intake.meta import signed_request
from app.services.intake.rest import RequestService
from app.services.target import TargetDirectory, TargetUnavailable
from app.settings import Settings
from app.subjects import InstagramDisconnectSubject, MetaDataSubject, RequestSubject

log = structlog.get_logger(__name__)

Family = Literal["facebook", "instagram"]

# Which identity Meta's app-scoped user_id is, per login family (SoundOps README).
IDENTITY: dict[Family, str] = {"facebook": "facebook_user_id", "instagram": "ig_user_id"}
SECRET_SETTING: dict[Family, str] = {
    "facebook": "DELETION_META_APP_SECRET",
    "instagram": "DELETION_INSTAGRAM_APP_SECRET",
}
DEAUTHORIZE_REASON = "Meta deauthorize callback: the person removed the app"
# Deauthorize callbacks of one process that expand at once, at most; the others of a
# burst are answered once recorded and expanded by the workers (#18: thousands at once).
INLINE_EXPANSIONS = 4


def callback_request(
    family: Family,
    kind: RequestKind,
    subject: RequestSubject,
    *,
    idempotency_key: str,
    reason: str | None = None,
) -> NewDeletion:
    """The request a verified callback files. Its fingerprint is that of the create body
    the callback stands for (source ``api``, as stored since the first release), so a
    replay delivered across versions still finds it."""
    body = {
        "kind": kind.value,
        "subject": subject.model_dump(mode="json"),
        "source": "api",
        "notify_email": None,
        "reason": reason,
    }
    return NewDeletion(
        kind=kind,
        identities=subject.identities(),
        source=RequestSource.meta_callback,
        requested_by=f"meta:{family}",
        fingerprint=fingerprint(body),
        reason=reason,
        idempotency_key=idempotency_key,
    )


@dataclass(frozen=True)
class Deauthorized:
    """What a deauthorize callback led to. ``expanded`` False: recorded, and the worker
    files the disconnects when it can read the SoundOps database (counts unknown yet)."""

    expanded: bool
    disconnects: int | None = None
    skipped_reconnected: int | None = None


class MetaCallbacks:
    def __init__(
        self,
        settings: Settings,
        requests: RequestService,
        directory: TargetDirectory | None,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        self._settings = settings
        self._requests = requests
        self._directory = directory
        self._sessions = sessionmaker
        self._postgres = postgres_engine(sessionmaker)
        self._expanding = 0  # callbacks expanding now (INLINE_EXPANSIONS at most)

    def _verify(self, family: Family, value: str | None) -> signed_request.SignedRequest:
        secret = (
            self._settings.meta_app_secret
            if family == "facebook"
            else self._settings.instagram_app_secret
        )
        if secret is None:
            raise ServiceUnavailable(
                f"This callback is not configured ({SECRET_SETTING[family]} is not set)."
            )
        return signed_request.verify(
            value,
            secret.get_secret_value().encode(),
            max_age=self._settings.meta_max_age_seconds,
        )

    @staticmethod
    def _subject(family: Family, verified: signed_request.SignedRequest) -> MetaDataSubject:
        try:
            return MetaDataSubject.model_validate({IDENTITY[family]: verified.user_id})
        except ValidationError as exc:
            raise signed_request.InvalidSignedRequest(
                "signed_request user_id is not an app-scoped id"
            ) from exc

    @staticmethod
    def _key(verified: signed_request.SignedRequest) -> str:
        return "signed_request:" + hashlib.sha256(verified.signature).hexdigest()

    async def data_deletion(
        self, family: Family, value: str | None
    ) -> DeletionRequest | FiledRequest:
        verified = self._verify(family, value)
        subject = self._subject(family, verified)
        intake = await self._requests.create(
            callback_request(
                family, RequestKind.meta_data, subject, idempotency_key=self._key(verified)
            )
        )
        return intake.request

    async def deauthorize(self, family: Family, value: str | None) -> Deauthorized:
        """Record the verified callback (durably, once per signature), then expand it now
        if the SoundOps database can be read and fewer than ``INLINE_EXPANSIONS`` callbacks
        are expanding; otherwise a worker does it (``expand_due``)."""
        verified = self._verify(family, value)
        now = utcnow()
        # Expanded at once by at most INLINE_EXPANSIONS callbacks at a time: beyond, a
        # burst is answered as soon as each callback is recorded (durably), and the
        # workers expand them. One that expands now records its deauthorization already
        # claimed (one transaction less); the others leave it due for the workers.
        inline = self._directory is not None and self._expanding < INLINE_EXPANSIONS
        owner = f"callback:{uuid.uuid4().hex[:8]}" if inline else None
        if inline:
            self._expanding += 1
        try:
            return await self._record_and_expand(family, verified, owner, now)
        finally:
            if inline:
                self._expanding -= 1

    async def _record_and_expand(
        self,
        family: Family,
        verified: signed_request.SignedRequest,
        owner: str | None,
        now: datetime,
    ) -> Deauthorized:
        identity = IDENTITY[family]
        user_id = self._subject(family, verified).identities()[identity]
        key = self._settings.effective_hash_key
        record = MetaDeauthorization(
            id=uuid.uuid4(),
            replay_key=keyed_hash(key, f"meta-deauthorize:{family}:{self._key(verified)}"),
            family=family,
            user_id=user_id,
            user_hash=identity_hash(key, identity, user_id),
            issued_at=(
                datetime.fromtimestamp(verified.issued_at, UTC)
                if verified.issued_at is not None
                else None
            ),
            received_at=now,
            run_after=now,
            attempts=0 if owner is None else 1,
            lease_owner=owner,
            lease_expires_at=(
                None if owner is None else now + timedelta(seconds=self._settings.lease_seconds)
            ),
        )
        stored = await self._record(record)
        if stored.expanded_at is not None:  # delivered again: what it led to the first time
            return Deauthorized(True, stored.disconnects, stored.skipped_reconnected)
        if owner is None:
            return Deauthorized(False)  # no SoundOps database here: the worker expands it
        if stored is record:  # recorded now, claimed by this callback
            return await self._expand_claimed(stored, owner, lambda attempts: timedelta(0))
        # Delivered again before its expansion ended: expand it, unless another holds it.
        expanded = await self.expand(stored.id, owner=owner)
        return expanded or Deauthorized(False)

    async def _record(self, record: MetaDeauthorization) -> MetaDeauthorization:
        """Store a verified callback durably: ``record`` itself when stored now, the one
        stored already for the same callback (delivered again) otherwise. On PostgreSQL
        one statement in autocommit, on a connection of the pool used directly."""
        if self._postgres is not None:
            async with DriverConnection(self._postgres) as connection:
                inserted = await repository.insert_deauthorization(connection, record)
        else:
            async with self._sessions() as session:
                inserted = await repository.insert_deauthorization(session, record)
        if inserted:
            return record
        async with self._sessions() as session:
            stored = await repository.deauthorization_by_replay_key(session, record.replay_key)
        if stored is None:
            # Its twin was being stored when this statement began and is committed now
            # (or it conflicted with nothing we can see): nothing was stored by this
            # call, the same callback again will find or store it.
            raise ServiceUnavailable(
                "The callback could not be recorded; retry it.", headers={"Retry-After": "1"}
            )
        return stored

    async def expand(
        self,
        record_id: uuid.UUID,
        *,
        owner: str,
        retry_after: Callable[[int], timedelta] = lambda attempts: timedelta(0),
    ) -> Deauthorized | None:
        """Expand one recorded deauthorization into disconnects, under a lease. None when
        this caller has nothing to do: no SoundOps database is configured, another holds
        it, or it is expanded already. ``Deauthorized(False)`` when the SoundOps database
        cannot be read: it is due again after ``retry_after(attempts)``."""
        if self._directory is None:
            return None
        lease = timedelta(seconds=self._settings.lease_seconds)
        async with self._sessions() as session:
            record = await repository.claim_deauthorization(
                session, record_id, owner, utcnow(), lease
            )
        if record is None:
            return None
        return await self._expand_claimed(record, owner, retry_after)

    async def _expand_claimed(
        self,
        record: MetaDeauthorization,
        owner: str,
        retry_after: Callable[[int], timedelta],
    ) -> Deauthorized:
        """Expand a deauthorization that ``owner`` holds, and give it back: expanded, or
        due again after ``retry_after(attempts)`` when the SoundOps database cannot be
        read."""
        assert self._directory is not None
        record_id = record.id
        try:
            filed, reconnected = await self._file_disconnects(self._directory, record)
        except (TargetUnavailable, ServiceUnavailable):
            retry_at = utcnow() + retry_after(record.attempts)
            async with self._sessions() as session:
                await repository.finish_deauthorization(
                    session, record_id, owner, {"run_after": retry_at}
                )
            log.warning("deauthorize_expansion_deferred", record_id=str(record_id))
            return Deauthorized(False)
        async with self._sessions() as session:
            await repository.finish_deauthorization(
                session,
                record_id,
                owner,
                {
                    "expanded_at": utcnow(),
                    "run_after": None,
                    "user_id": None,  # minimised: the keyed hash stays as evidence
                    "disconnects": filed,
                    "skipped_reconnected": reconnected,
                },
            )
        log.info(
            "deauthorize_expanded", record_id=str(record_id), disconnects=filed, skipped=reconnected
        )
        return Deauthorized(True, filed, reconnected)

    async def _file_disconnects(
        self, directory: TargetDirectory, record: MetaDeauthorization
    ) -> tuple[int, int]:
        family: Family = "facebook" if record.family == "facebook" else "instagram"
        assert record.user_id is not None  # removed only once expanded
        accounts = await directory.connected_accounts(IDENTITY[family], record.user_id)
        filed = reconnected = 0
        for account in accounts:
            if (
                record.issued_at is not None
                and account.connected_at is not None
                and account.connected_at > record.issued_at
            ):
                reconnected += 1  # connected again after removing the app: leave it be
                continue
            subject = InstagramDisconnectSubject(
                tenant_id=account.tenant_id, instagram_account_id=account.account_id
            )
            await self._requests.create(
                callback_request(
                    family,
                    RequestKind.instagram_disconnect,
                    subject,
                    idempotency_key=f"meta-deauthorize:{record.id}:{account.account_id}",
                    reason=DEAUTHORIZE_REASON,
                ),
                owner_known=True,  # the account and its tenant were read just now
            )
            filed += 1
        return filed, reconnected

    async def expand_due(
        self,
        *,
        owner: str,
        retry_after: Callable[[int], timedelta],
        limit: int = 500,
        batch: int = 20,
    ) -> int:
        """The worker's sweep: expand the recorded deauthorizations that are due, claimed
        ``batch`` at a time (several workers take different ones), up to ``limit``; how
        many were expanded. Stops at the first that cannot be (the database is down)."""
        if self._directory is None:
            return 0
        lease = timedelta(seconds=self._settings.lease_seconds)
        expanded = 0
        while expanded < limit:
            async with self._sessions() as session:
                claimed = await repository.claim_due_deauthorizations(
                    session, owner, utcnow(), lease, min(batch, limit - expanded)
                )
            if not claimed:
                return expanded
            for n, record in enumerate(claimed):
                outcome = await self._expand_claimed(record, owner, retry_after)
                if not outcome.expanded:  # the SoundOps database cannot be read now
                    async with self._sessions() as session:
                        for rest in claimed[n + 1 :]:  # not tried: due again at once
                            await repository.finish_deauthorization(session, rest.id, owner, {})
                    return expanded
                expanded += 1
        return expanded
