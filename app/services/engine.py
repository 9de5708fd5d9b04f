"""The execution engine: workers claim requests from the tracking table and run their purgers.

- The queue is the ``deletion_requests`` table: a due request is claimed under a
  lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), kept alive by heartbeats. A
  worker that dies leaves a lease that expires; any other worker takes over.
- A claimed request's tasks run concurrently in an ``asyncio.TaskGroup``; each
  task has its own DB session, catches its own errors and records its own
  status, so one failing store never cancels the others. A task waits for the
  tasks named in its ``after`` (the Meta step before the token-deleting one).
- Outcomes are typed (``app/purgers/base.py``). Transient failures are retried
  with exponential backoff and jitter, persisted as ``next_attempt_at`` (no
  sleeping while holding a claim), up to ``max_attempts``.
- Every task outcome is written only while the worker still holds the lease
  (a fencing check in the same transaction).
- A task's ``deleted`` counts add up across attempts: its purger reports every
  committed batch (:class:`TaskCounts`), which is written under the lease at once,
  so an attempt that is cut off still counts what it deleted and GET shows the
  counts moving. A worker that lost its lease adds nothing.
- A request is ``completed`` only when every task succeeded or was skipped with
  a reason, and every succeeded purger's ``verify`` found nothing left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import metrics, repository
from app.datamap import Resolution, Selection
from app.models import (
    DeletionRequest,
    DeletionTask,
    RequestKind,
    RequestSource,
    RequestStatus,
    TaskStatus,
    utcnow,
)
from app.pii import Pii
from app.purgers.base import (
    NotConfigured,
    PurgeFailed,
    PurgeNotApplicable,
    Purger,
    PurgeRetriable,
    PurgerName,
    Subject,
)
from app.services.claims import completion_sentence, store_claim
from app.services.identities import hashes as identity_hashes
from app.services.identities import identity_hash
from app.services.intake import email as email_requests
from app.services.intake.rest import CANCELLED_REASON
from app.services.notify import DeliveryFailed, completion_text, send_email, send_webhook
from app.services.resolution import digest
from app.settings import Settings

if TYPE_CHECKING:
    from app.services.intake.meta.callbacks import MetaCallbacks

log = structlog.get_logger(__name__)

EMAIL_SUBJECT = "Your SoundOps data deletion is complete"
FINISHED = frozenset({TaskStatus.succeeded, TaskStatus.skipped, TaskStatus.failed})
DONE = frozenset({TaskStatus.succeeded, TaskStatus.skipped})


PurgerSlot = Purger | NotConfigured


class ResolverLike(Protocol):
    async def resolve(
        self, kind: RequestKind, identities: dict[str, str], pinned: Selection | None = None
    ) -> Resolution: ...


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


@dataclass
class _Run:
    """One claimed request being worked on."""

    request_id: uuid.UUID
    subject: Subject
    done: dict[str, asyncio.Event] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)
    lost: bool = False


class TaskCounts:
    """A task's :class:`~app.purgers.base.Progress`: what its purger deleted.

    ``base`` is what earlier attempts recorded; each batch this attempt reports is
    added to ``attempt`` and the sum is written to the task at once, under the lease.
    Every write sets the whole total (never "add n"), so a write that failed or was
    cut off and is made again by the next batch or by the task's outcome cannot count
    a batch twice. A failed write is logged and made good by the next one; a lost
    lease stops the purge (:class:`LeaseLost`) and adds nothing.
    """

    def __init__(
        self, base: Mapping[str, int], write: Callable[[dict[str, int]], Awaitable[None]]
    ) -> None:
        self.base = {key: int(n) for key, n in base.items()}
        self._write = write
        self.attempt: Counter[str] = Counter()
        self._lock = asyncio.Lock()

    async def deleted(self, counts: Mapping[str, int]) -> None:
        counts = {key: n for key, n in counts.items() if n > 0}
        if not counts:
            return
        async with self._lock:
            self.attempt.update(counts)
            try:
                await self._write(self.total())
            except LeaseLost:
                raise
            except Exception as exc:  # the tracking DB blinked: the next write carries it
                log.warning("progress_not_recorded", error_type=type(exc).__name__)

    def total(self, result: Mapping[str, int] | None = None) -> dict[str, int]:
        """Earlier attempts plus this one; ``result`` is what the attempt's purge returned
        (a purger that reports no batches, such as the Graph step, counts by it)."""
        result = result or {}
        keys = dict.fromkeys([*result, *self.base, *self.attempt])
        return {
            key: self.base.get(key, 0) + max(self.attempt.get(key, 0), result.get(key, 0))
            for key in keys
        }


def _error_text(exc: BaseException) -> str:
    """What an operator sees. Our own outcome types carry safe messages; a foreign
    exception's message might quote data, so only its type is kept."""
    if isinstance(exc, PurgeFailed | PurgeRetriable | PurgeNotApplicable):
        return str(exc)[:1000]
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"unexpected error ({type(exc).__name__})"


class Engine:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        purgers: Mapping[PurgerName, PurgerSlot],
        worker_id: str,
        resolver: ResolverLike,
        *,
        http: httpx.AsyncClient | None = None,
        datamap_version: str | None = None,
        meta: MetaCallbacks | None = None,
    ) -> None:
        self.settings = settings
        self._meta = meta
        self._sessions = sessionmaker
        self._purgers = purgers
        self.worker_id = worker_id
        self._resolver = resolver
        self._http = http
        self._datamap_version = datamap_version

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    # --- claiming -------------------------------------------------------------------

    async def claim(self) -> repository.Claim | None:
        now = utcnow()
        async with self._sessions() as session:
            claim = await repository.claim_next(session, self.worker_id, self.lease, now)
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

    async def run_claimed(self, request_id: uuid.UUID) -> None:
        """Work on a claimed request, with heartbeats, until its tasks have settled."""
        work = asyncio.current_task()
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(request_id, work, lost))
        try:
            await self._process(request_id)
        except asyncio.CancelledError:
            if not lost.is_set():
                await self._release_interrupted(request_id)
                raise
            log.warning("lease_lost", request_id=str(request_id), worker=self.worker_id)
            current = asyncio.current_task()
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
                        session, request_id, self.worker_id, utcnow() + self.lease
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

    async def _release_interrupted(self, request_id: uuid.UUID) -> None:
        """Shutdown mid-request: hand it back at once so another worker continues."""
        with contextlib.suppress(Exception):
            async with self._sessions() as session:
                await repository.release(session, request_id, self.worker_id, run_after=utcnow())
                repository.add_event(session, request_id, "released", actor=self.worker_id)
                await session.commit()

    # --- running tasks --------------------------------------------------------------

    async def _process(self, request_id: uuid.UUID) -> None:
        async with self._sessions() as session:
            request = await repository.get_request(session, request_id)
            if request is None:
                return
            if request.status in (RequestStatus.completed, RequestStatus.cancelled):
                await session.rollback()
                await self._finalize(request_id)
                return
            tasks = list(await repository.get_tasks(session, request_id))
            kind = RequestKind(request.kind)
            identities = {k: str(v) for k, v in request.subject.items()}
            stored = request.resolution
            pinned = Selection.model_validate(request.pinned) if request.pinned else None
            revoked_at_meta = (
                request.source == RequestSource.meta_callback
                and kind is RequestKind.instagram_disconnect
            )
        if stored is not None:
            resolution: Resolution | None = Resolution.model_validate(stored)
        elif all(self._slot(task.purger) is None for task in tasks):
            resolution = Resolution()  # no store configured: every task is skipped anyway
        else:
            resolution = await self._resolve(request_id, kind, identities, pinned)
        if resolution is None:
            return
        subject = Subject(
            request_id=request_id,
            kind=kind,
            identities={k: Pii(v) for k, v in identities.items()},
            resolution=resolution,
            revoked_at_meta=revoked_at_meta,
        )
        run = _Run(request_id, subject, done={t.purger: asyncio.Event() for t in tasks})
        async with asyncio.TaskGroup() as group:
            for task in tasks:
                group.create_task(self._guarded(run, task))
        if run.lost:
            raise LeaseLost
        await self._settle(request_id)

    async def _resolve(
        self,
        request_id: uuid.UUID,
        kind: RequestKind,
        identities: dict[str, str],
        pinned: Selection | None,
    ) -> Resolution | None:
        """Resolve the subject once, before any purger runs, and record it; a pinned
        request (confirmed or approved from e-mail) never beyond its pin."""
        try:
            resolution = await self._resolver.resolve(kind, identities, pinned)
        except PurgeRetriable as exc:
            await self._give_back(
                request_id,
                "resolution_retrying",
                {"error": _error_text(exc)},
                run_after=utcnow() + backoff(self.settings, 3, exc.after),
            )
            return None
        except PurgeFailed as exc:
            await self._give_back(
                request_id,
                "failed",
                {"error": _error_text(exc), "step": "resolution"},
                status=RequestStatus.failed,
                run_after=None,
                status_reason=_error_text(exc),
            )
            return None
        async with self._sessions() as session:
            await self._fence(session, request_id)
            await repository.set_values(
                session,
                request_id,
                resolution=resolution.model_dump(),
                resolution_digest=digest(resolution, self.settings.effective_hash_key),
                datamap_version=self._datamap_version,
            )
            await repository.add_subject_hashes(
                session,
                request_id,
                identity_hashes(self.settings.effective_hash_key, {}, resolution),
            )
            repository.add_event(
                session,
                request_id,
                "resolved",
                actor=self.worker_id,
                detail={name: len(values) for name, values in resolution.model_dump().items()},
            )
            await session.commit()
        return resolution

    def _slot(self, name: str) -> Purger | None:
        """The purger of a store, or None when the store is not configured."""
        slot = self._purgers.get(PurgerName(name))
        return None if slot is None or isinstance(slot, NotConfigured) else slot

    async def _give_back(
        self, request_id: uuid.UUID, event: str, detail: dict[str, Any], **values: Any
    ) -> None:
        """Release the claim with new values and record why, while still holding it."""
        async with self._sessions() as session:
            await self._fence(session, request_id)
            await repository.release(session, request_id, self.worker_id, **values)
            repository.add_event(session, request_id, event, actor=self.worker_id, detail=detail)
            await session.commit()

    async def _guarded(self, run: _Run, task: DeletionTask) -> None:
        try:
            # Every log line of this task names the request and the store, nothing more.
            with structlog.contextvars.bound_contextvars(
                deletion_request_id=str(run.request_id), purger=task.purger
            ):
                run.final[task.purger] = await self._run_task(run, task)
        except LeaseLost:
            run.lost = True
        except Exception as exc:  # the tracking DB failed us: the lease will expire, retry
            log.error("task_bookkeeping_failed", purger=task.purger, error_type=type(exc).__name__)
            run.final[task.purger] = TaskStatus.running
        finally:
            run.done[task.purger].set()

    async def _run_task(self, run: _Run, task: DeletionTask) -> str:
        status = TaskStatus(task.status)
        if status in FINISHED:
            return status
        if (
            status is TaskStatus.retrying
            and task.next_attempt_at is not None
            and task.next_attempt_at > utcnow()
        ):
            return status
        for dependency in task.after:
            if dependency in run.done:
                await run.done[dependency].wait()
                if run.final.get(dependency) not in DONE:
                    return status  # blocked: runs once the dependency is done

        name = PurgerName(task.purger)
        slot = self._slot(name)
        if slot is None:
            reason = self._purgers.get(name)
            await self._finish(
                run,
                task,
                TaskStatus.skipped,
                "task_skipped",
                error=reason.reason
                if isinstance(reason, NotConfigured)
                else NotConfigured(f"no {name} purger in this process").reason,
                started=True,
            )
            return TaskStatus.skipped

        attempt = task.attempts + 1
        async with self._sessions() as session:
            await self._fence(session, run.request_id)
            await repository.update_task(
                session,
                task.id,
                status=TaskStatus.running,
                attempts=attempt,
                started_at=task.started_at or utcnow(),
                next_attempt_at=None,
            )
            repository.add_event(
                session,
                run.request_id,
                "task_started",
                actor=self.worker_id,
                purger=name,
                detail={"attempt": attempt},
            )
            await session.commit()

        counts = TaskCounts(
            task.deleted or {}, partial(self._write_counts, run.request_id, task.id)
        )
        subject = replace(run.subject, progress=counts)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.purger_timeout_seconds):
                result = await slot.purge(subject)
                remaining = await slot.verify(subject)
        except LeaseLost:
            raise
        except PurgeNotApplicable as exc:
            await self._finish(
                run,
                task,
                TaskStatus.skipped,
                "task_skipped",
                error=_error_text(exc),
                deleted=counts.total(),
            )
            return TaskStatus.skipped
        except (PurgeRetriable, TimeoutError) as exc:
            after = exc.after if isinstance(exc, PurgeRetriable) else None
            return await self._retry_or_fail(
                run, task, attempt, _error_text(exc), after, deleted=counts.total()
            )
        except Exception as exc:
            log.warning("purger_failed", purger=name, error_type=type(exc).__name__)
            await self._finish(
                run,
                task,
                TaskStatus.failed,
                "task_failed",
                error=_error_text(exc),
                deleted=counts.total(),
            )
            return TaskStatus.failed

        elapsed = round(time.monotonic() - started, 3)
        left = {k: v for k, v in remaining.items() if v}
        if left:
            summary = ", ".join(f"{count} in {where}" for where, count in sorted(left.items()))
            return await self._retry_or_fail(
                run,
                task,
                attempt,
                f"verification found data left: {summary}",
                None,
                deleted=counts.total(result.deleted),
            )
        await self._finish(
            run,
            task,
            TaskStatus.succeeded,
            "task_succeeded",
            deleted=counts.total(result.deleted),
            retained={
                k: {"count": r.count, "reason": r.reason} for k, r in result.retained.items()
            },
            detail={"seconds": elapsed, "deleted": result.deleted},
            verified=remaining,
        )
        return TaskStatus.succeeded

    async def _retry_or_fail(
        self,
        run: _Run,
        task: DeletionTask,
        attempt: int,
        error: str,
        after: timedelta | None,
        deleted: dict[str, int] | None = None,
    ) -> str:
        if attempt >= self.settings.max_attempts:
            await self._finish(
                run,
                task,
                TaskStatus.failed,
                "task_failed",
                error=f"gave up after {attempt} attempts: {error}",
                deleted=deleted,
            )
            return TaskStatus.failed
        next_at = utcnow() + backoff(self.settings, attempt, after)
        await self._finish(
            run,
            task,
            TaskStatus.retrying,
            "task_retrying",
            error=error,
            deleted=deleted,
            next_attempt_at=next_at,
            detail={"attempt": attempt, "next_attempt_at": next_at.isoformat()},
        )
        return TaskStatus.retrying

    async def _fence(self, session: AsyncSession, request_id: uuid.UUID) -> None:
        if not await repository.holds_lease(session, request_id, self.worker_id, utcnow()):
            raise LeaseLost

    async def _write_counts(
        self, request_id: uuid.UUID, task_id: uuid.UUID, deleted: dict[str, int]
    ) -> None:
        """A task's counts so far (:class:`TaskCounts`), only while holding the lease."""
        async with self._sessions() as session:
            await self._fence(session, request_id)
            await repository.update_task(session, task_id, deleted=deleted)
            await session.commit()

    async def _finish(
        self,
        run: _Run,
        task: DeletionTask,
        status: TaskStatus,
        event: str,
        *,
        error: str | None = None,
        deleted: dict[str, int] | None = None,
        retained: dict[str, Any] | None = None,
        next_attempt_at: datetime | None = None,
        detail: dict[str, Any] | None = None,
        started: bool = False,
        verified: dict[str, int] | None = None,
    ) -> None:
        now = utcnow()
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "next_attempt_at": next_attempt_at,
        }
        if status is not TaskStatus.retrying:
            values["finished_at"] = now
        if started:
            values["started_at"] = task.started_at or now
        if deleted is not None:
            values["deleted"] = deleted
        if retained is not None:
            values["retained"] = retained
        async with self._sessions() as session:
            await self._fence(session, run.request_id)
            await repository.update_task(session, task.id, **values)
            if verified is not None:
                repository.add_event(
                    session,
                    run.request_id,
                    "task_verified",
                    actor=self.worker_id,
                    purger=task.purger,
                    detail={"remaining": verified},
                )
            repository.add_event(
                session,
                run.request_id,
                event,
                actor=self.worker_id,
                purger=task.purger,
                detail={**(detail or {}), **({"error": error} if error else {})},
            )
            await session.commit()
        log.info(event, request_id=str(run.request_id), purger=task.purger)
        metrics.TASKS.labels(purger=task.purger, outcome=status.value).inc()
        if status is TaskStatus.retrying:
            metrics.RETRIES.labels(purger=task.purger).inc()
        if status is TaskStatus.succeeded:
            metrics.DELETED.labels(store=task.purger).inc(sum((deleted or {}).values()))
        if detail and "seconds" in detail:
            metrics.TASK_SECONDS.labels(purger=task.purger).observe(detail["seconds"])

    async def _settle(self, request_id: uuid.UUID) -> None:
        """Decide the request's status from its tasks, and give the claim back."""
        async with self._sessions() as session:
            await self._fence(session, request_id)
            tasks = await repository.get_tasks(session, request_id)
            statuses = {t.purger: TaskStatus(t.status) for t in tasks}
            now = utcnow()
            values: dict[str, Any]
            detail: dict[str, Any]
            if all(s in DONE for s in statuses.values()):
                request = await repository.get_request(session, request_id)
                assert request is not None
                values = {
                    "status": RequestStatus.completed,
                    "completed_at": now,
                    # Next: confirmations, then minimisation.
                    "run_after": now,
                    "webhook_status": "pending" if self.settings.notify_webhook_url else None,
                    "email_status": (
                        "pending"
                        if self.settings.smtp_url and _email_target(request) is not None
                        else None
                    ),
                }
                event, detail = "completed", {}
            elif any(s is TaskStatus.retrying for s in statuses.values()):
                next_at = min(
                    (t.next_attempt_at for t in tasks if t.next_attempt_at is not None),
                    default=now,
                )
                values = {"status": RequestStatus.running, "run_after": next_at}
                event, detail = "waiting_for_retry", {"run_after": next_at.isoformat()}
            elif any(s is TaskStatus.failed for s in statuses.values()):
                failed = sorted(p for p, s in statuses.items() if s is TaskStatus.failed)
                values = {
                    "status": RequestStatus.failed,
                    "run_after": None,
                    "status_reason": "failed in: " + ", ".join(failed),
                }
                event, detail = "failed", {"failed": failed}
            else:  # interrupted tasks: run again soon
                values = {"status": RequestStatus.running, "run_after": now}
                event, detail = "requeued", {}
            await repository.release(session, request_id, self.worker_id, **values)
            repository.add_event(session, request_id, event, actor=self.worker_id, detail=detail)
            await session.commit()
        log.info("request_" + event, request_id=str(request_id))

    # --- the 30-day deadline ------------------------------------------------------------

    async def check_deadlines(self) -> tuple[int, int]:
        """Record (event + log) open requests that come within reach of, or pass, ``due_at``."""
        now = utcnow()
        warn = timedelta(days=self.settings.deadline_warn_days)
        async with self._sessions() as session:
            near, overdue = await repository.deadline_candidates(session, now, warn)
            for request_id in near:
                await repository.set_values(session, request_id, deadline_warned_at=now)
                repository.add_event(session, request_id, "deadline_near", actor=self.worker_id)
                log.warning("request_deadline_near", request_id=str(request_id))
            for request_id in overdue:
                await repository.set_values(session, request_id, overdue_warned_at=now)
                repository.add_event(session, request_id, "overdue", actor=self.worker_id)
                log.error("request_overdue", request_id=str(request_id))
            await session.commit()
        return len(near), len(overdue)

    async def expire_confirmations(self) -> int:
        """Cancel requests from e-mail whose confirmation link expired unconfirmed."""
        async with self._sessions() as session:
            return await email_requests.expire_confirmations(
                session, utcnow(), actor=self.worker_id
            )

    async def expire_reviews(self) -> int:
        """Cancel requests from e-mail that no operator reviewed within 30 days."""
        async with self._sessions() as session:
            return await email_requests.expire_reviews(session, utcnow(), actor=self.worker_id)

    async def mail_unsent_links(self) -> int:
        """Mail the confirmation links that intake filed but could not mail."""
        return await email_requests.mail_unsent_links(
            self.settings, self._sessions, utcnow(), actor=self.worker_id
        )

    async def expand_deauthorizations(self) -> int:
        """File the disconnects of recorded Meta deauthorizations that could not be expanded
        when they came (the SoundOps database was down or not configured)."""
        if self._meta is None:
            return 0
        return await self._meta.expand_due(
            owner=self.worker_id, retry_after=lambda attempts: backoff(self.settings, attempts)
        )

    # --- after completion: confirmations, then minimisation --------------------------

    async def _finalize(self, request_id: uuid.UUID) -> None:
        async with self._sessions() as session:
            request = await repository.get_request(session, request_id)
            assert request is not None
            tasks = list(await repository.get_tasks(session, request_id))
        payload = completion_payload(request, tasks, self.settings.public_base_url)
        target = _email_target(request)
        senders: dict[str, Callable[[], Awaitable[None]]] = {}
        if request.webhook_status == "pending" and self._http is not None:
            http = self._http
            senders["webhook"] = lambda: send_webhook(http, self.settings, payload)
        if request.email_status == "pending" and target is not None:
            senders["email"] = lambda: send_email(
                self.settings, target, EMAIL_SUBJECT, completion_text(payload)
            )
        attempts = request.notify_attempts + (1 if senders else 0)
        statuses = {"webhook": request.webhook_status, "email": request.email_status}
        errors: dict[str, str] = {}
        for channel, send in senders.items():
            try:
                await send()
                statuses[channel] = "sent"
            except DeliveryFailed as exc:
                errors[channel] = str(exc)
                if attempts >= self.settings.max_attempts:
                    statuses[channel] = "given_up"
        retrying = any(statuses[channel] == "pending" for channel in errors)
        values: dict[str, Any] = {
            "webhook_status": statuses["webhook"],
            "email_status": statuses["email"],
            "notify_attempts": attempts,
        }
        async with self._sessions() as session:
            await self._fence(session, request_id)
            for channel in senders:
                if statuses[channel] != "pending":
                    error = {"error": errors[channel]} if channel in errors else {}
                    repository.add_event(
                        session,
                        request_id,
                        f"{channel}_{statuses[channel]}",
                        actor=self.worker_id,
                        detail={"attempts": attempts, **error},
                    )
            if retrying:
                next_at = utcnow() + backoff(self.settings, attempts)
                repository.add_event(
                    session,
                    request_id,
                    "confirmation_retrying",
                    actor=self.worker_id,
                    detail={"errors": errors, "next_attempt_at": next_at.isoformat()},
                )
                values["run_after"] = next_at
            else:
                # Confirmed (or given up): keep evidence, not personal data.
                rejected = await repository.has_event(session, request_id, "rejected")
                values.update(run_after=None, **self._minimised(request, rejected=rejected))
                repository.add_event(session, request_id, "minimised", actor=self.worker_id)
            await repository.release(session, request_id, self.worker_id, **values)
            await session.commit()

    def _minimised(self, request: DeletionRequest, *, rejected: bool) -> dict[str, Any]:
        """The request's columns with every raw identifier replaced by a keyed hash, or gone,
        and no free text of an operator's (it may name the person)."""
        key = self.settings.effective_hash_key
        return {
            "subject": {
                name: "hmac-sha256:" + identity_hash(key, name, str(value))
                for name, value in request.subject.items()
            },
            "notify_email": None,
            "confirm_recipients": None,
            "reason": None,
            "status_reason": _status_reason_kept(request, rejected=rejected),
            "resolution": None,
            "pinned": None,
            "review": None,
            "minimised_at": utcnow(),
        }


# The status reasons the service writes itself. Any other was typed by an operator who
# cancelled or rejected the request, and gives way to the plain fact at minimisation.
SERVICE_REASONS = frozenset(
    {
        CANCELLED_REASON,
        email_requests.EXPIRED_REASON,
        email_requests.REJECTED_REASON,
        email_requests.REVIEW_EXPIRED_REASON,
    }
)


def _status_reason_kept(request: DeletionRequest, *, rejected: bool) -> str | None:
    reason = request.status_reason
    if request.status != RequestStatus.cancelled or reason is None or reason in SERVICE_REASONS:
        return reason
    return email_requests.REJECTED_REASON if rejected else CANCELLED_REASON


def _email_target(request: DeletionRequest) -> str | None:
    """Where the completion e-mail goes: the requested address; else, for a request from
    e-mail, the address on file that confirmed it; else the owner read at resolution."""
    if request.notify_email:
        return request.notify_email
    if request.confirm_recipients:
        return str(request.confirm_recipients[0])
    owners = (request.resolution or {}).get("owner_emails") or []
    return str(owners[0]) if owners else None


def completion_payload(
    request: DeletionRequest, tasks: list[DeletionTask], public_base_url: str
) -> dict[str, Any]:
    """What the confirmations say: no identifier of the subject, only the request's facts
    (per store: verified, or skipped and why, in the words of ``services/claims.py``)."""
    claims = [store_claim(task) for task in tasks]
    return {
        "event": "deletion.completed",
        "request_id": str(request.id),
        "kind": request.kind,
        "status": request.status,
        "created_at": request.created_at.isoformat(),
        "completed_at": request.completed_at.isoformat() if request.completed_at else None,
        "due_at": request.due_at.isoformat(),
        "status_url": f"{public_base_url}/deletion-status/{request.confirmation_code}",
        "summary": completion_sentence(claims),
        "stores": [
            {
                "store": task.purger,
                "status": task.status,
                "verified": claim.verified,
                "outcome": claim.text,
                "skipped": claim.skipped.value if claim.skipped else None,
                "deleted": dict(task.deleted),
                "retained": dict(task.retained),
            }
            for task, claim in zip(tasks, claims, strict=True)
        ],
    }


class Worker:
    """Claims due requests and runs up to ``worker_concurrency`` of them at once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.last_tick = time.monotonic()
        self._last_deadline_check = 0.0
        self._last_deauthorize_sweep = 0.0
        self._deauthorize_sweep: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        """New work was filed: look now instead of at the next poll."""
        self._wake.set()

    @property
    def healthy(self) -> bool:
        return time.monotonic() - self.last_tick < max(30.0, self.settings.worker_poll_seconds * 5)

    async def run(self) -> None:
        log.info("worker_started", worker=self.engine.worker_id)
        try:
            while not self._stopping.is_set():
                self.last_tick = time.monotonic()
                await self._deadlines()
                self._deauthorizations()
                claimed = False
                if len(self._in_flight) < self.settings.worker_concurrency:
                    claimed = await self._claim_one()
                if claimed:
                    continue
                await self._idle()
        finally:
            if self._deauthorize_sweep is not None:
                self._deauthorize_sweep.cancel()  # an expansion cut off is taken up again
                with contextlib.suppress(asyncio.CancelledError):
                    await self._deauthorize_sweep
            await self._drain()
            log.info("worker_stopped", worker=self.engine.worker_id)

    async def _deadlines(self) -> None:
        if time.monotonic() - self._last_deadline_check < self.settings.deadline_check_seconds:
            return
        self._last_deadline_check = time.monotonic()
        try:
            await self.engine.check_deadlines()
        except Exception as exc:  # tracking DB down: try again next time
            log.warning("deadline_check_failed", error_type=type(exc).__name__)
        try:
            await self.engine.expire_confirmations()
        except Exception as exc:  # tracking DB down: try again next time
            log.warning("confirmation_expiry_failed", error_type=type(exc).__name__)
        try:
            await self.engine.expire_reviews()
        except Exception as exc:  # tracking DB down: try again next time
            log.warning("review_expiry_failed", error_type=type(exc).__name__)
        try:
            await self.engine.mail_unsent_links()
        except Exception as exc:  # tracking DB down: try again next time
            log.warning("confirmation_resend_failed", error_type=type(exc).__name__)

    def _deauthorizations(self) -> None:
        """Once per poll interval: deauthorizations waiting for the SoundOps database
        (each waits out its own backoff, so a database that is down is not hammered). In
        a task of its own, so that a database slow to refuse never holds up claims."""
        if self._deauthorize_sweep is not None and not self._deauthorize_sweep.done():
            return
        if time.monotonic() - self._last_deauthorize_sweep < self.settings.worker_poll_seconds:
            return
        self._last_deauthorize_sweep = time.monotonic()
        self._deauthorize_sweep = asyncio.create_task(self._sweep_deauthorizations())

    async def _sweep_deauthorizations(self) -> None:
        try:
            await self.engine.expand_deauthorizations()
        except Exception as exc:  # tracking DB down: try again next time
            log.warning("deauthorize_sweep_failed", error_type=type(exc).__name__)

    async def _claim_one(self) -> bool:
        try:
            claim = await self.engine.claim()
        except Exception as exc:  # tracking DB down: keep polling, do not die
            log.warning("claim_failed", error_type=type(exc).__name__)
            return False
        if claim is None:
            return False
        task = asyncio.create_task(self.engine.run_claimed(claim.request_id))
        self._in_flight.add(task)
        task.add_done_callback(self._done)
        return True

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("request_run_crashed", error_type=type(task.exception()).__name__)
        self._wake.set()

    async def _idle(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.worker_poll_seconds):
                await self._wake.wait()

    async def _drain(self) -> None:
        """Finish what is running within the grace period; release the rest."""
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(
            self._in_flight, timeout=self.settings.shutdown_grace_seconds
        )
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
