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
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Unpack

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import repository
from app.models import DeletionRequest, DeletionTask, utcnow
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


@dataclass(frozen=True)
class Claimed:
    """A request just claimed, as it was read in the claiming transaction."""

    claim: repository.Claim
    request: DeletionRequest
    tasks: list[DeletionTask]


class LeaseLost(Exception):
    """Another worker holds the request now; this one stops touching it."""


class Transition:
    """One fenced transaction on a claimed request: its changes and the events that say why.

    Made by :meth:`Leases.transition`, which has already checked the lease and commits
    when the block ends (nothing is written if it raises)."""

    def __init__(
        self,
        session: AsyncSession,
        request_id: uuid.UUID,
        worker_id: str,
        held: bool | None = None,
    ) -> None:
        self.session = session
        self.request_id = request_id
        self.worker_id = worker_id
        self._held = held  # as the fence found it, in the same round trip
        self.events: list[dict[str, Any]] = []
        self._task_changes: list[tuple[uuid.UUID, TaskChanges]] = []

    async def held(self) -> bool:
        """Whether a legal hold matches the request; asked once per transaction (the
        writes that share a group transaction see the same answer): the fence's answer,
        unless the transaction gave the request subject hashes since."""
        if self._held is None:
            self._held = await repository.request_is_held(self.session, self.request_id)
        return self._held

    async def add_subject_hashes(self, hashes: set[str]) -> None:
        """Give the request these subject hashes (those it resolved to); a hold check later
        in this transaction looks again."""
        if await repository.add_subject_hashes(self.session, self.request_id, hashes):
            self._held = None

    def record(
        self, event: str, detail: dict[str, Any] | None = None, *, purger: str | None = None
    ) -> None:
        """Add an event to the request's log, by this worker (all of the transaction's
        events are inserted in one statement before it commits)."""
        self.events.append(
            repository.event_row(
                self.request_id, event, actor=self.worker_id, purger=purger, detail=detail
            )
        )

    async def update(self, **changes: Unpack[RequestChanges]) -> None:
        """Change the request and keep the claim."""
        await repository.set_values(self.session, self.request_id, **changes)

    async def update_task(self, task_id: uuid.UUID, **changes: Unpack[TaskChanges]) -> None:
        """Change a task, in this transaction: written by :meth:`flush` (at the latest
        before the commit), together with the other tasks' changes of the same shape."""
        self._task_changes.append((task_id, changes))

    async def flush(self) -> None:
        """Write the task changes made so far (before reading tasks in this transaction)."""
        if self._task_changes:
            changes, self._task_changes = self._task_changes, []
            await repository.update_tasks(self.session, changes)

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
        claimed = await self.claim_batch(1)
        return claimed[0].claim if claimed else None

    async def claim_batch(self, limit: int, long_limit: int | None = None) -> list[Claimed]:
        """Take up to ``limit`` due requests under a lease (at most ``long_limit`` of a long
        kind), with their rows and tasks: one transaction for the batch (the claims, their
        events, the reads)."""
        now = utcnow()
        async with self._sessions() as session:
            await repository.begin_driver(session)
            try:
                claims = await repository.claim_batch(
                    session, self.worker_id, self.duration, now, limit, long_limit
                )
                if not claims:
                    await session.rollback()
                    return []
                events = []
                for claim in claims:
                    if claim.previous_owner is not None:
                        events.append(
                            repository.event_row(
                                claim.request_id,
                                "lease_taken_over",
                                actor=self.worker_id,
                                detail={"previous_owner": claim.previous_owner},
                            )
                        )
                    events.append(
                        repository.event_row(claim.request_id, "claimed", actor=self.worker_id)
                    )
                await repository.insert_events(session, events)
                rows = await repository.get_requests_with_tasks(
                    session, [claim.request_id for claim in claims]
                )
                await session.commit()
            finally:
                repository.end_driver(session)
        for claim in claims:
            log.info("request_claimed", request_id=str(claim.request_id), worker=self.worker_id)
        return [
            Claimed(claim, rows[claim.request_id][0], rows[claim.request_id][1])
            for claim in claims
            if claim.request_id in rows
        ]

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

    async def fence(self, session: AsyncSession, request_id: uuid.UUID) -> bool:
        """Raise :class:`LeaseLost` unless this worker still holds the request (the row is
        locked for the rest of the transaction); whether a legal hold matches it."""
        held = await repository.fence(session, request_id, self.worker_id, utcnow())
        if held is None:
            raise LeaseLost
        return held

    @asynccontextmanager
    async def transition(self, request_id: uuid.UUID) -> AsyncIterator[Transition]:
        """A transaction that writes only while this worker holds the lease: fence, then
        the block's changes and events, then commit."""
        async with self._sessions() as session:
            # On PostgreSQL its hot statements run as driver SQL, in this transaction.
            await repository.begin_driver(session)
            try:
                held = await self.fence(session, request_id)
                tx = Transition(session, request_id, self.worker_id, held)
                yield tx
                await tx.flush()
                await repository.insert_events(session, tx.events)
                await session.commit()
            finally:
                repository.end_driver(session)

    def group(
        self,
        request_id: uuid.UUID,
        finish: Callable[[Transition], Awaitable[object]] | None = None,
    ) -> GroupWrites:
        """Writes of a claimed request's concurrent tasks, committed together
        (:class:`GroupWrites`)."""
        return GroupWrites(self, request_id, finish)

    async def release_at_shutdown(self, request_id: uuid.UUID) -> None:
        """Shutdown mid-request: hand it back at once so another worker continues."""
        with contextlib.suppress(Exception):
            async with self._sessions() as session:
                await repository.release(session, request_id, self.worker_id, run_after=utcnow())
                repository.add_event(session, request_id, "released", actor=self.worker_id)
                await session.commit()


Write = Callable[[Transition], Awaitable[None]]


class GroupWrites:
    """Group commit of one claimed request's writes: the writes its concurrent tasks make
    at the same moment (their starts, their outcomes) go into one fenced transaction.

    :meth:`write` returns once its write is committed (or raises what the transaction
    raised, :class:`LeaseLost` included), exactly as a :meth:`Leases.transition` of its
    own would: nothing is acknowledged before it is durable. Writes made while a
    transaction is under way wait for it and go together into the next one. Fail-stop:
    once a transaction failed, every later write fails with it (the run ends; its lease
    expires or it settles, and the request is taken up again). ``finish``,
    when given, runs at the end of every transaction (after the batch's writes): the
    runner settles the request there once its last task is recorded; what it returned in
    the last committed transaction is :attr:`finished`.
    """

    # Turns of the event loop a transaction waits for the writes of the other tasks that
    # were woken at the same moment (no-op or failing purgers end together).
    GATHER_TURNS = 2

    def __init__(
        self,
        leases: Leases,
        request_id: uuid.UUID,
        finish: Callable[[Transition], Awaitable[object]] | None = None,
    ) -> None:
        self._leases = leases
        self.request_id = request_id
        self._finish = finish
        self.finished: object = None
        self._queue: list[tuple[Write, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._failed: Exception | None = None

    @property
    def queued(self) -> bool:
        """Whether writes wait for a later transaction than the one under way (``finish``
        must not settle a request whose last outcome is among them)."""
        return bool(self._queue)

    async def write(self, write: Write) -> None:
        """Make ``write`` in the next group transaction; return once it is committed."""
        await self.submit(write)

    def submit(self, write: Write) -> asyncio.Future[None]:
        """Queue ``write`` for the next group transaction; the future is its commit."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._failed is not None:
            # Fail-stop: a write never lands after one before it failed (a task must not
            # start when the resolution it needs was not recorded).
            future.set_exception(self._failed)
            return future
        self._queue.append((write, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        for _ in range(self.GATHER_TURNS):
            await asyncio.sleep(0)
        while self._queue:
            batch = [(w, f) for w, f in self._queue if not f.done()]  # done: cancelled
            self._queue = []
            if not batch:
                continue
            try:
                async with self._leases.transition(self.request_id) as tx:
                    for write, _ in batch:
                        await write(tx)
                    finished = await self._finish(tx) if self._finish is not None else None
            except BaseException as exc:
                if isinstance(exc, Exception):
                    self._failed = exc
                    batch += self._queue  # queued meanwhile: never after a failed write
                    self._queue = []
                for _, future in batch:
                    if future.done():
                        continue
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                if finished is not None:
                    self.finished = finished
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
