"""Carrying out a claimed request: resolve its subject once, run its tasks, settle it.

- A claimed request's tasks run concurrently in an ``asyncio.TaskGroup``; each task has
  its own DB session, catches its own errors and records its own status, so one failing
  store never cancels the others. A task waits for the tasks named in its ``after`` (the
  Meta step before the token-deleting one).
- Outcomes are typed (``app/purgers/base.py``). Transient failures are retried with
  exponential backoff and jitter, persisted as ``next_attempt_at`` (no sleeping while
  holding a claim), up to ``max_attempts``.
- Every task outcome is written only while the worker still holds the lease (a
  :meth:`~app.services.execution.lease.Leases.transition`).
- A task's ``deleted`` counts add up across attempts: its purger reports every committed
  batch (:class:`TaskCounts`), which is written under the lease at once, so an attempt
  that is cut off still counts what it deleted and GET shows the counts moving. A worker
  that lost its lease adds nothing.
- A request is ``completed`` only when every task succeeded or was skipped with a reason,
  and every succeeded purger's ``verify`` found nothing left. A request that settles to
  ``completed`` or ``failed`` gets its signed receipt in the same transaction
  (:func:`~app.services.evidence.receipts.issue`).
- A legal hold (:mod:`app.services.holds`) is looked for before every task's attempt
  and when the request settles: a held request starts no further attempt and settles
  ``on_hold`` (what already ran stays recorded; it is never reported done).
- A completed request keeps its claim: the engine goes straight on to its confirmations
  and minimisation (:mod:`.completion`) under the same lease.

The verbs: a task's outcome is *recorded* (:meth:`Runner._record`); the request is then
*settled* (:meth:`Runner._settle`: its status decided from its tasks; its claim released,
or kept for the completion step when it completed).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

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
    PurgerSlot,
    Subject,
)
from app.repository import RequestChanges, TaskChanges
from app.services.evidence import receipts
from app.services.evidence.minimisation import minimised
from app.services.execution.completion import email_targets
from app.services.execution.lease import (
    GroupWrites,
    LeaseLost,
    Leases,
    Transition,
    Write,
    backoff,
)
from app.services.execution.priority import ShortFirst
from app.services.holds import HELD_EVENT
from app.services.identities import hashes as identity_hashes
from app.services.resolution import ResolverLike, digest
from app.settings import Settings

log = structlog.get_logger(__name__)

# A task that is done lets the tasks after it run, and its request complete. A task that
# is final is not run again (only an operator's retry resets a failed one).
DONE = frozenset({TaskStatus.succeeded, TaskStatus.skipped})
FINAL = DONE | {TaskStatus.failed}


@dataclass(frozen=True)
class Settled:
    """How a run ended: the request's status, and whether this worker still holds the
    claim (a completed request with confirmations to send: the completion step is next)."""

    status: RequestStatus
    event: str
    claim_kept: bool = False


@dataclass
class _Run:
    """One claimed request being worked on. ``writes`` commits the starts and outcomes
    its tasks make at the same moment together; ``open`` are the tasks not yet recorded
    or returned: once none is, the request settles in the transaction of the last
    outcome."""

    request_id: uuid.UUID
    subject: Subject
    writes: GroupWrites
    done: dict[str, asyncio.Event] = field(default_factory=dict)
    final: dict[str, TaskStatus] = field(default_factory=dict)
    open: set[str] = field(default_factory=set)
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
        self,
        base: Mapping[str, int],
        write: Callable[[dict[str, int]], Awaitable[None]],
        pause: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.base = {key: int(n) for key, n in base.items()}
        self._write = write
        self._pause = pause  # a batch yield point (``priority.ShortFirst``)
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
        if self._pause is not None:
            await self._pause()

    def total(self, result: Mapping[str, int] | None = None) -> dict[str, int]:
        """Earlier attempts plus this one; ``result`` is what the attempt's purge returned
        (a purger that reports no batches, such as the Graph step, counts by it)."""
        result = result or {}
        keys = dict.fromkeys([*result, *self.base, *self.attempt])
        return {
            key: self.base.get(key, 0) + max(self.attempt.get(key, 0), result.get(key, 0))
            for key in keys
        }


def error_text(exc: BaseException) -> str:
    """What an operator sees. Our own outcome types carry safe messages; a foreign
    exception's message might quote data, so only its type is kept."""
    if isinstance(exc, PurgeFailed | PurgeRetriable | PurgeNotApplicable):
        return str(exc)[:1000]
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"unexpected error ({type(exc).__name__})"


class Runner:
    """Carries out claimed requests: resolution, the tasks of its plan, the settlement."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        leases: Leases,
        purgers: Mapping[PurgerName, PurgerSlot],
        resolver: ResolverLike,
        *,
        datamap_version: str | None = None,
    ) -> None:
        self.settings = settings
        self._sessions = sessionmaker
        self._leases = leases
        self._purgers = purgers
        self._resolver = resolver
        self._datamap_version = datamap_version
        self._receipt_key = receipts.private_key(settings)
        self.short_first = ShortFirst()

    async def run(self, request: DeletionRequest, tasks: list[DeletionTask]) -> Settled | None:
        """Run a claimed request's tasks (resolving its subject first, once), then settle it:
        how it settled (None when it was released before, to resolve later). A completed
        request with confirmations to send is still claimed (``claim_kept``): the caller
        completes it; one with none is minimised and released as it settles. Raises
        :class:`LeaseLost` when another worker took the request over meanwhile."""
        request_id = request.id
        kind = RequestKind(request.kind)
        identities = {k: str(v) for k, v in request.subject.items()}
        pinned = Selection.model_validate(request.pinned) if request.pinned else None
        revoked_at_meta = (
            request.source == RequestSource.meta_callback
            and kind is RequestKind.instagram_disconnect
        )
        record_resolution: Write | None = None
        if request.resolution is not None:
            resolution = Resolution.model_validate(request.resolution)
        elif all(self._slot(task.purger) is None for task in tasks):
            resolution = Resolution()  # no store configured: every task is skipped anyway
        else:
            resolved = await self._resolve(request_id, kind, identities, pinned)
            if resolved is None:
                return None
            resolution, record_resolution = resolved
        subject = Subject(
            request_id=request_id,
            kind=kind,
            identities={k: Pii(v) for k, v in identities.items()},
            resolution=resolution,
            revoked_at_meta=revoked_at_meta,
            revoke_deadline=self._revoke_deadline(request, kind),
        )
        run = _Run(
            request_id,
            subject,
            writes=self._leases.group(request_id),
            done={t.purger: asyncio.Event() for t in tasks},
            open={t.purger for t in tasks},
        )
        run.writes = self._leases.group(request_id, partial(self._settle_when_last, run))
        # The resolution is recorded in the transaction that starts the first tasks (a
        # queue: before their starts); no purger runs before it is committed.
        recorded = run.writes.submit(record_resolution) if record_resolution else None
        async with asyncio.TaskGroup() as group:
            for task in tasks:
                group.create_task(self._guarded(run, task))
        if recorded is not None:
            try:
                await recorded
            except LeaseLost:
                run.lost = True
        if run.lost:
            raise LeaseLost
        settled = run.writes.finished
        if not isinstance(settled, Settled):  # no outcome was recorded last: settle now
            async with self._leases.transition(request_id) as tx:
                settled = await self._settle_in(tx)
        log.info("request_" + settled.event, request_id=str(request_id))
        return settled

    async def _resolve(
        self,
        request_id: uuid.UUID,
        kind: RequestKind,
        identities: dict[str, str],
        pinned: Selection | None,
    ) -> tuple[Resolution, Write] | None:
        """Resolve the subject once, before any purger runs; a pinned request (confirmed
        or approved from e-mail) never beyond its pin. The resolution and the write that
        records it (the caller makes it before any task starts). When it cannot be
        resolved, the claim is released: to try again later, or failed."""
        try:
            resolution = await self._resolver.resolve(kind, identities, pinned)
        except PurgeRetriable as exc:
            async with self._leases.transition(request_id) as tx:
                await tx.release(run_after=utcnow() + backoff(self.settings, 3, exc.after))
                tx.record("resolution_retrying", {"error": error_text(exc)})
            return None
        except PurgeFailed as exc:
            async with self._leases.transition(request_id) as tx:
                await tx.release(
                    status=RequestStatus.failed, run_after=None, status_reason=error_text(exc)
                )
                tx.record("failed", {"error": error_text(exc), "step": "resolution"})
                await receipts.issue(
                    tx.session, request_id, self._receipt_key, self.settings.backup_retention_days
                )
            return None
        key = self.settings.effective_hash_key

        async def record(tx: Transition) -> None:
            await tx.update(
                resolution=resolution.model_dump(),
                resolution_digest=digest(resolution, key),
                datamap_version=self._datamap_version,
            )
            await tx.add_subject_hashes(identity_hashes(key, {}, resolution))
            tx.record(
                "resolved",
                {name: len(values) for name, values in resolution.model_dump().items()},
            )

        return resolution, record

    def _revoke_deadline(self, request: DeletionRequest, kind: RequestKind) -> datetime | None:
        """A disconnect whose Meta step runs here: the tokens are held for it until this
        moment at most (``DELETION_REVOKE_DEADLINE`` from the request's creation)."""
        if kind is not RequestKind.instagram_disconnect:
            return None
        if self._slot(PurgerName.meta_graph) is None:
            return None  # no Meta step: the PostgreSQL step destroys the tokens at once
        return request.created_at + self.settings.revoke_deadline

    def _slot(self, name: str) -> Purger | None:
        """The purger of a store, or None when the store is not configured."""
        slot = self._purgers.get(PurgerName(name))
        return None if slot is None or isinstance(slot, NotConfigured) else slot

    async def _guarded(self, run: _Run, task: DeletionTask) -> None:
        try:
            # Every log line of this task names the request and the store, nothing more.
            with (
                structlog.contextvars.bound_contextvars(
                    deletion_request_id=str(run.request_id), purger=task.purger
                ),
                self.short_first.running(run.subject.kind),
            ):
                run.final[task.purger] = await self._run_task(run, task)
        except LeaseLost:
            run.lost = True
        except Exception as exc:  # the tracking DB failed us: the lease will expire, retry
            log.error("task_bookkeeping_failed", purger=task.purger, error_type=type(exc).__name__)
            run.final[task.purger] = TaskStatus.running
        finally:
            run.open.discard(task.purger)
            run.done[task.purger].set()

    async def _run_task(self, run: _Run, task: DeletionTask) -> TaskStatus:
        status = TaskStatus(task.status)
        if status in FINAL:
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
            await self._record(
                run,
                task,
                TaskStatus.skipped,
                error=reason.reason
                if isinstance(reason, NotConfigured)
                else NotConfigured(f"no {name} purger in this process").reason,
                started=True,
            )
            return TaskStatus.skipped

        attempt = task.attempts + 1
        held = False

        async def start(tx: Transition) -> None:
            # The boundary where a legal hold stops a running request: no attempt starts
            # while one matches it (what it named or resolved to); it settles on hold.
            nonlocal held
            held = await tx.held()
            if held:
                return
            await tx.update_task(
                task.id,
                status=TaskStatus.running,
                attempts=attempt,
                started_at=task.started_at or utcnow(),
                next_attempt_at=None,
            )
            tx.record("task_started", {"attempt": attempt}, purger=name)

        # With the starts of the request's other tasks that are ready now: one transaction.
        await run.writes.write(start)
        if held:
            return status

        counts = TaskCounts(
            task.deleted or {},
            partial(self._write_counts, run.request_id, task.id),
            pause=self.short_first.pause_for(run.subject.kind),
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
            await self._record(
                run, task, TaskStatus.skipped, error=error_text(exc), deleted=counts.total()
            )
            return TaskStatus.skipped
        except (PurgeRetriable, TimeoutError) as exc:
            after = exc.after if isinstance(exc, PurgeRetriable) else None
            return await self._retry_or_fail(
                run, task, attempt, error_text(exc), after, deleted=counts.total()
            )
        except Exception as exc:
            log.warning("purger_failed", purger=name, error_type=type(exc).__name__)
            await self._record(
                run, task, TaskStatus.failed, error=error_text(exc), deleted=counts.total()
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
        await self._record(
            run,
            task,
            TaskStatus.succeeded,
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
    ) -> TaskStatus:
        # A disconnect's Meta step ends at its deadline (tokens destroyed, skipped), not by
        # running out of attempts: it is tried again at the deadline at the latest.
        deadline = run.subject.revoke_deadline if task.purger == PurgerName.meta_graph else None
        if deadline is None and attempt >= self.settings.max_attempts:
            await self._record(
                run,
                task,
                TaskStatus.failed,
                error=f"gave up after {attempt} attempts: {error}",
                deleted=deleted,
            )
            return TaskStatus.failed
        next_at = utcnow() + backoff(self.settings, attempt, after)
        if deadline is not None and utcnow() < deadline:
            next_at = min(next_at, deadline)
        await self._record(
            run,
            task,
            TaskStatus.retrying,
            error=error,
            deleted=deleted,
            next_attempt_at=next_at,
            detail={"attempt": attempt, "next_attempt_at": next_at.isoformat()},
        )
        return TaskStatus.retrying

    async def _write_counts(
        self, request_id: uuid.UUID, task_id: uuid.UUID, deleted: dict[str, int]
    ) -> None:
        """A task's counts so far (:class:`TaskCounts`), only while holding the lease."""
        async with self._leases.transition(request_id) as tx:
            await tx.update_task(task_id, deleted=deleted)

    async def _record(
        self,
        run: _Run,
        task: DeletionTask,
        status: TaskStatus,
        *,
        error: str | None = None,
        deleted: dict[str, int] | None = None,
        retained: dict[str, Any] | None = None,
        next_attempt_at: datetime | None = None,
        detail: dict[str, Any] | None = None,
        started: bool = False,
        verified: dict[str, int] | None = None,
    ) -> None:
        """Record a task's outcome (its event is ``task_<status>``), under the lease."""
        now = utcnow()
        event = f"task_{status.value}"
        changes: TaskChanges = {
            "status": status,
            "error": error,
            "next_attempt_at": next_attempt_at,
        }
        if status is not TaskStatus.retrying:
            changes["finished_at"] = now
        if started:
            changes["started_at"] = task.started_at or now
        if deleted is not None:
            changes["deleted"] = deleted
        if retained is not None:
            changes["retained"] = retained

        # What the verification found (nothing left, or the task would not have succeeded)
        # is in the outcome's event: evidence that it was checked, in the same row.
        detail = {
            **(detail or {}),
            **({"remaining": verified} if verified is not None else {}),
            **({"error": error} if error else {}),
        }

        async def outcome(tx: Transition) -> None:
            await tx.update_task(task.id, **changes)
            tx.record(event, detail, purger=task.purger)

        # With the outcomes of the request's other tasks that end now, and, when this is
        # the last, the request's settlement: one transaction. The tasks that wait for
        # this one may queue their starts into it: a group transaction is all or nothing
        # and its writes land in order, so none starts its purge before this outcome is
        # committed.
        run.open.discard(task.purger)
        run.final[task.purger] = status
        run.done[task.purger].set()
        await run.writes.write(outcome)
        log.info(event, request_id=str(run.request_id), purger=task.purger)
        metrics.TASKS.labels(purger=task.purger, outcome=status.value).inc()
        if status is TaskStatus.retrying:
            metrics.RETRIES.labels(purger=task.purger).inc()
        if status is TaskStatus.succeeded:
            metrics.DELETED.labels(store=task.purger).inc(sum((deleted or {}).values()))
        if detail and "seconds" in detail:
            metrics.TASK_SECONDS.labels(purger=task.purger).observe(detail["seconds"])

    async def _settle_when_last(self, run: _Run, tx: Transition) -> Settled | None:
        """At the end of each of the run's group transactions: once no task is open and no
        write waits for a later transaction (this one holds the last outcome), settle the
        request in it. A task leaves ``open`` when it submits its outcome, which may land
        in the next transaction: settling before it is recorded would release the claim
        under it."""
        if run.open or run.lost or run.writes.queued:
            return None
        return await self._settle_in(tx)

    async def _settle_in(self, tx: Transition) -> Settled:
        """Decide the request's status from its tasks, in ``tx``, and release the claim. A
        completed request with confirmations to send keeps it, for the completion step
        next; one with none is minimised at once. A final status (completed, failed) comes
        with the request's signed receipt (made once, after the minimisation)."""
        request_id = tx.request_id
        await tx.flush()  # this transaction's task outcomes, before the tasks are read
        request = await repository.get_request_with_tasks(tx.session, request_id)
        assert request is not None
        tasks = request.tasks
        statuses = {t.purger: TaskStatus(t.status) for t in tasks}
        now = utcnow()
        changes: RequestChanges
        detail: dict[str, Any]
        status: RequestStatus
        claim_kept = False
        minimise = False
        if all(s in DONE for s in statuses.values()):
            status = RequestStatus.completed
            changes = {
                "status": status,
                "completed_at": now,
                # Next, under this claim: confirmations, then minimisation. Due now, so
                # that another worker completes it if this one dies first.
                "run_after": now,
                "webhook_status": "pending" if self.settings.notify_webhook_url else None,
                "email_status": (
                    "pending" if self.settings.smtp_url and email_targets(request) else None
                ),
            }
            event, detail = "completed", {}
            if changes["webhook_status"] is None and changes["email_status"] is None:
                # Nothing to confirm: the completion step would only minimise it.
                minimise = True
                # Only a cancelled request's reason depends on it (an operator's words).
                rejected = request.status == RequestStatus.cancelled and (
                    await repository.has_event(tx.session, request_id, "rejected")
                )
                changes["run_after"] = None
                changes.update(
                    minimised(request, self.settings.effective_hash_key, rejected=rejected)
                )
            else:
                claim_kept = True
        elif await tx.held():
            status = RequestStatus.on_hold
            changes = {"status": status, "run_after": None}
            event, detail = HELD_EVENT, {"step": "before the next task"}
        elif any(s is TaskStatus.retrying for s in statuses.values()):
            next_at = min(
                (t.next_attempt_at for t in tasks if t.next_attempt_at is not None),
                default=now,
            )
            status = RequestStatus.running
            changes = {"status": status, "run_after": next_at}
            event, detail = "waiting_for_retry", {"run_after": next_at.isoformat()}
        elif any(s is TaskStatus.failed for s in statuses.values()):
            failed = sorted(p for p, s in statuses.items() if s is TaskStatus.failed)
            status = RequestStatus.failed
            changes = {
                "status": status,
                "run_after": None,
                "status_reason": "failed in: " + ", ".join(failed),
            }
            event, detail = "failed", {"failed": failed}
        else:  # interrupted tasks: run again soon
            status = RequestStatus.running
            changes = {"status": status, "run_after": now}
            event, detail = "requeued", {}
        if status in (RequestStatus.completed, RequestStatus.failed):
            # The receipt of the request as this statement leaves it (its tasks were read
            # in this transaction, after its outcomes): written with the settlement.
            changes["receipt"] = receipts.make(
                receipts.Facts.of(request, changes),
                tasks,
                self._receipt_key,
                self.settings.backup_retention_days,
            )
        if claim_kept:
            await tx.update(**changes)
        else:
            await tx.release(**changes)
        tx.record(event, detail)
        if minimise:
            tx.record("minimised")
        return Settled(status, event, claim_kept)
