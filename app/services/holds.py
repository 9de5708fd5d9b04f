"""Legal holds: place, list, release; the requests of a held subject wait in ``on_hold``.

- **Whom a hold holds.** Its subject is one or more identities of any kind of request
  (``app.subjects.HoldSubject``, the same canonical form a request stores), kept as the
  same keyed hashes requests keep (``app.services.identities.hashes``). A request is held
  when one identity it named, or (once resolved, before any purger runs) one it
  resolved to, has one of those hashes: equality of hashes, nothing looser.
- **Where it is enforced.** Placing a hold puts the matched requests that no worker holds
  on hold at once; a request filed for a held subject is filed ``on_hold``
  (``intake.command.insert``); and the runner looks before every task's attempt and
  again when it settles (``execution.runner``), so a request that was running, or
  became ``pending`` by another way (a confirmation link, an approval, a retry), stops
  before its next task starts. A worker never claims a request on hold.
- **Release.** The hold's subject becomes keyed hashes and its reason goes (as a
  minimised request keeps no operator text); every request on hold that no active hold
  matches any more goes back to ``pending`` (an event each) and runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import repository
from app.errors import Conflict, NotFound, Unprocessable
from app.models import LegalHold, utcnow
from app.services.evidence.minimisation import hashed_subject
from app.services.identities import hashes as identity_hashes

log = structlog.get_logger(__name__)

# The events a request's log gets when a hold stops it, and when a release resumes it.
HELD_EVENT = "held"
RESUMED_EVENT = "resumed"


@dataclass(frozen=True)
class Placed:
    hold: LegalHold
    held_requests: int  # requests put on hold at once (running ones stop at their next task)


@dataclass(frozen=True)
class Released:
    hold: LegalHold
    resumed_requests: int


class HoldService:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], hash_key: bytes) -> None:
        self._sessions = sessionmaker
        self._hash_key = hash_key

    async def place(self, identities: dict[str, str], *, reason: str, actor: str) -> Placed:
        """Hold a subject (``identities`` in canonical form, ``HoldSubject.identities()``)."""
        now = utcnow()
        async with self._sessions() as session:
            hold = repository.add_hold(
                session,
                subject=identities,
                hashes=identity_hashes(self._hash_key, identities),
                reason=reason,
                created_by=actor,
                now=now,
            )
            await session.flush()
            held = await repository.hold_waiting_requests(session, now)
            for request_id in held:
                repository.add_event(
                    session, request_id, HELD_EVENT, actor=actor, detail={"hold_id": str(hold.id)}
                )
            await session.commit()
        log.info("legal_hold_placed", hold_id=str(hold.id), requests_held=len(held))
        return Placed(hold, len(held))

    async def get(self, hold_id: uuid.UUID) -> LegalHold:
        async with self._sessions() as session:
            hold = await repository.get_hold(session, hold_id)
        if hold is None:
            raise NotFound("No legal hold with this id.")
        return hold

    async def list(
        self, *, include_released: bool, limit: int, cursor: str | None
    ) -> tuple[Sequence[LegalHold], str | None]:
        async with self._sessions() as session:
            try:
                return await repository.list_holds(
                    session, active=not include_released, limit=limit, cursor=cursor
                )
            except repository.InvalidCursor as exc:
                raise Unprocessable("The cursor is not valid; start again without it.") from exc

    async def release(self, hold_id: uuid.UUID, *, actor: str) -> Released:
        """Release an active hold; its requests that no other hold matches resume."""
        now = utcnow()
        async with self._sessions() as session:
            hold = await repository.get_hold(session, hold_id)
            if hold is None:
                raise NotFound("No legal hold with this id.")
            released = hold.released_at is None and await repository.release_hold(
                session,
                hold_id,
                released_by=actor,
                subject=hashed_subject(hold.subject, self._hash_key),
                now=now,
            )
            if not released:
                await session.rollback()
                raise Conflict("This legal hold was released already.")
            resumed = await repository.resume_released_requests(session, now)
            for request_id in resumed:
                repository.add_event(
                    session,
                    request_id,
                    RESUMED_EVENT,
                    actor=actor,
                    detail={"hold_id": str(hold_id)},
                )
            await session.commit()
            hold = await repository.get_hold(session, hold_id)
        assert hold is not None
        log.info("legal_hold_released", hold_id=str(hold_id), requests_resumed=len(resumed))
        return Released(hold, len(resumed))
