"""Leases on the queue: claim, heartbeat, fence, release; and the backoff of retries.

The queue is the ``deletion_requests`` table: a due request is claimed under a lease
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL), kept alive by heartbeats. A worker that dies
leaves a lease that expires; any other worker takes over.

Every write of a worker about a claimed request is a :meth:`Leases.transition`: one
transaction that first checks the worker still holds the lease (the fence), then makes
its changes and records its events, then commits. A worker that lost the lease changes
nothing (:class:`LeaseLost`). A claim is given back only by :meth:`Transition.release`
(with the request's new status and next run time) or, at shutdown, by
:meth:`Leases.release_at_shutdown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Unpack

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import repository
from app.models import utcnow
from app.repository import RequestChanges, TaskChanges
from app.settings import Settings

log = structlog.get_logger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def backoff(settings: Settings, attempt: int, after: timedelta | None = None) -> timedelta:
    """Exponential backoff with 'equal jitter': half fixed, half random."""
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto
    if after is not None:
        delay = max(delay, after.total_seconds())
    return timedelta(seconds=delay)


class LeaseLost(Exception):
    """Another worker holds the request now; this one stops touching it."""


class Transition:
    """One fenced transaction on a claimed request: its changes and the events that say why.

    Made by :meth:`Leases.transition`, which has already checked the lease and commits
    when the block ends (nothing is written if it raises)."""

    def __init__(self, session: AsyncSession, request_id: uuid.UUID, worker_id: str) -> None:
        self.session = session
        self.request_id = request_id
        self.worker_id = worker_id

    def record(
        self, event: str, detail: dict[str, Any] | None = None, *, purger: str | None = None
    ) -> None:
        """Add an event to the request's log, by this worker."""
        repository.add_event(
            self.session,
            self.request_id,
            event,
            actor=self.worker_id,
            purger=purger,
            detail=detail,
        )

    async def update(self, **changes: Unpack[RequestChanges]) -> None:
        """Change the request and keep the claim."""
        await repository.set_values(self.session, self.request_id, **changes)

    async def update_task(self, task_id: uuid.UUID, **changes: Unpack[TaskChanges]) -> None:
        await repository.update_task(self.session, task_id, **changes)

    async def release(self, **changes: Unpack[RequestChanges]) -> None:
        """Change the request and give the claim back: the end of this worker's turn."""
        await repository.release(self.session, self.request_id, self.worker_id, **changes)


class Leases:
    """One worker's leases: what it claims, keeps alive, writes under, and gives back."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        worker_id: str,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self._sessions = sessionmaker

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    async def claim(self) -> repository.Claim | None:
        """Take the next due request under a lease, or None."""
        now = utcnow()
        async with self._sessions() as session:
            claim = await repository.claim_next(session, self.worker_id, self.duration, now)
            if claim is None:
                await session.rollback()
                return None
            if claim.previous_owner is not None:
                repository.add_event(
                    session,
                    claim.request_id,
                    "lease_taken_over",
                    actor=self.worker_id,
                    detail={"previous_owner": claim.previous_owner},
                )
            repository.add_event(session, claim.request_id, "claimed", actor=self.worker_id)
            await session.commit()
        log.info("request_claimed", request_id=str(claim.request_id), worker=self.worker_id)
        return claim

    async def hold(self, request_id: uuid.UUID, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` on a claimed request with heartbeats. A lost lease stops it (and is
        logged, not raised); a shutdown hands the request back at once, then re-raises."""
        current = asyncio.current_task()
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(request_id, current, lost))
        try:
            await work()
        except asyncio.CancelledError:
            if not lost.is_set():
                await self.release_at_shutdown(request_id)
                raise
            log.warning("lease_lost", request_id=str(request_id), worker=self.worker_id)
            if current is not None:
                current.uncancel()
        except LeaseLost:
            log.warning("lease_lost", request_id=str(request_id), worker=self.worker_id)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(
        self, request_id: uuid.UUID, work: asyncio.Task[Any] | None, lost: asyncio.Event
    ) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._sessions() as session:
                    held = await repository.extend_lease(
                        session, request_id, self.worker_id, utcnow() + self.duration
                    )
                    await session.commit()
            except Exception as exc:  # the tracking DB may blink; the lease has slack
                log.warning("heartbeat_failed", error_type=type(exc).__name__)
                continue
            if not held:
                lost.set()
                if work is not None:
                    work.cancel()
                return

    async def fence(self, session: AsyncSession, request_id: uuid.UUID) -> None:
        """Raise :class:`LeaseLost` unless this worker still holds the request (the row is
        locked for the rest of the transaction)."""
        if not await repository.holds_lease(session, request_id, self.worker_id, utcnow()):
            raise LeaseLost

    @asynccontextmanager
    async def transition(self, request_id: uuid.UUID) -> AsyncIterator[Transition]:
        """A transaction that writes only while this worker holds the lease: fence, then
        the block's changes and events, then commit."""
        async with self._sessions() as session:
            await self.fence(session, request_id)
            yield Transition(session, request_id, self.worker_id)
            await session.commit()

    async def release_at_shutdown(self, request_id: uuid.UUID) -> None:
        """Shutdown mid-request: hand it back at once so another worker continues."""
        with contextlib.suppress(Exception):
            async with self._sessions() as session:
                await repository.release(session, request_id, self.worker_id, run_after=utcnow())
                repository.add_event(session, request_id, "released", actor=self.worker_id)
                await session.commit()
