"""The worker loop: claims due requests and runs them, and runs the sweeps now and then.

Up to ``worker_concurrency`` requests run at once, each in a task of its own, and beside
them as many short ones again (an ``instagram_disconnect``, see
:data:`app.repository.SHORT_KINDS`): a worker whose slots are all taken by account
deletions that run for minutes still takes a disconnect at once (#18). A new
request wakes the loop (:meth:`Worker.wake`) instead of waiting for the next poll. On
:meth:`Worker.stop` the requests in flight get ``shutdown_grace_seconds`` to finish;
the rest are handed back at once for another worker to continue.

Retention (:mod:`app.services.evidence.retention.enforce`): at start and every
``retention_check_seconds``, a pass in a task of its own (a sweep can take minutes and
must never hold up claims), under the retention lease, so one worker at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from app import metrics
from app.models import RequestKind
from app.repository import SHORT_KINDS
from app.services.evidence.retention.enforce import RetentionEnforcer
from app.services.execution.engine import Engine

log = structlog.get_logger(__name__)


class Worker:
    """Claims due requests and runs up to ``worker_concurrency`` of them at once."""

    def __init__(self, engine: Engine, retention: RetentionEnforcer | None = None) -> None:
        self.engine = engine
        self.retention = retention
        self.settings = engine.settings
        self.last_tick = time.monotonic()
        self._last_deadline_check = 0.0
        # Sweeps that run in tasks of their own (never holding up claims), by name.
        self._background: dict[str, asyncio.Task[None]] = {}
        self._last_background: dict[str, float] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._long: set[asyncio.Task[None]] = set()  # the in-flight ones of a long kind
        self._batch = max(1, self.settings.worker_concurrency // 2)

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
        polled = False
        try:
            while not self._stopping.is_set():
                self.last_tick = time.monotonic()
                metrics.WORKER_HEARTBEAT.set_to_current_time()
                await self._deadlines()
                # Deauthorizations waiting for the SoundOps database (each waits out its
                # own backoff, so a database that is down is not hammered); notices to the
                # operators (a mail server slow to refuse never holds up claims).
                self._in_background(
                    "deauthorize_sweep_failed",
                    self.settings.worker_poll_seconds,
                    self.engine.expand_deauthorizations,
                )
                self._in_background(
                    "operator_notice_sweep_failed",
                    self.settings.deadline_check_seconds,
                    self.engine.notify_operators,
                )
                # Retention: at start, then every DELETION_RETENTION_CHECK_SECONDS.
                if self.retention is not None and self.retention.configured:
                    self._in_background(
                        "retention_pass_failed",
                        self.settings.retention_check_seconds,
                        self.retention.run,
                    )
                claimed = False
                concurrency = self.settings.worker_concurrency
                # Slots for long work, and as many again for short work only.
                free = 2 * concurrency - len(self._in_flight)
                long_free = min(concurrency - len(self._long), free)
                # Claims in batches: while requests are in flight, a slot that frees waits
                # for half of them to be free (one claiming transaction for several
                # requests), at most until the next poll.
                if free > 0 and (not self._in_flight or long_free >= self._batch or polled):
                    claimed = await self._claim(free, long_free)
                if claimed:
                    polled = False
                    continue
                polled = await self._idle()
        finally:
            # A sweep cut off is taken up again (leases expire; a retention pass releases its
            # lease when cancelled).
            for sweep in self._background.values():
                sweep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweep
            await self._drain()
            log.info("worker_stopped", worker=self.engine.worker_id)

    async def _deadlines(self) -> None:
        if time.monotonic() - self._last_deadline_check < self.settings.deadline_check_seconds:
            return
        self._last_deadline_check = time.monotonic()
        sweeps: tuple[tuple[str, Callable[[], Awaitable[object]]], ...] = (
            ("deadline_check_failed", self.engine.check_deadlines),
            ("confirmation_expiry_failed", self.engine.expire_confirmations),
            ("review_expiry_failed", self.engine.expire_reviews),
            ("confirmation_resend_failed", self.engine.mail_unsent_links),
        )
        for failure, sweep in sweeps:
            try:
                await sweep()
            except Exception as exc:  # tracking DB down: try again next time
                log.warning(failure, error_type=type(exc).__name__)

    def _in_background(
        self, failure: str, every: float, sweep: Callable[[], Awaitable[object]]
    ) -> None:
        """At most every ``every`` seconds, and never two at once: ``sweep`` in a task of
        its own, so that a server slow to refuse never holds up claims."""
        running = self._background.get(failure)
        if running is not None and not running.done():
            return
        if time.monotonic() - self._last_background.get(failure, float("-inf")) < every:
            return
        self._last_background[failure] = time.monotonic()
        self._background[failure] = asyncio.create_task(self._sweep(failure, sweep))

    async def _sweep(self, failure: str, sweep: Callable[[], Awaitable[object]]) -> None:
        try:
            await sweep()
        except Exception as exc:  # tracking DB down: try again next time
            log.warning(failure, error_type=type(exc).__name__)

    async def _claim(self, limit: int, long_limit: int) -> bool:
        """Claim up to ``limit`` due requests, at most ``long_limit`` of a long kind (one
        transaction), and start each in a task."""
        try:
            claimed = await self.engine.claim_batch(limit, long_limit)
        except Exception as exc:  # tracking DB down: keep polling, do not die
            log.warning("claim_failed", error_type=type(exc).__name__)
            return False
        for one in claimed:
            task = asyncio.create_task(self.engine.run_claimed(one.claim.request_id, one))
            self._in_flight.add(task)
            if RequestKind(one.request.kind) not in SHORT_KINDS:
                self._long.add(task)
            task.add_done_callback(self._done)
        return bool(claimed)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._long.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("request_run_crashed", error_type=type(task.exception()).__name__)
        self._wake.set()

    async def _idle(self) -> bool:
        """Wait for a wake-up or the next poll; True when the poll interval passed."""
        self._wake.clear()
        try:
            async with asyncio.timeout(self.settings.worker_poll_seconds):
                await self._wake.wait()
        except TimeoutError:
            return True
        return False

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
