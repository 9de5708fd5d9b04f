"""Retention that enforces itself: the worker's periodic pass (contract, "Guarantees that
need no request").

A pass, run by at most one worker at a time (the expiring lease ``retention`` in the
tracking database, renewed every third of ``DELETION_LEASE_SECONDS`` and after every
deleted batch; a pass that cannot renew it stops; a crashed worker's lease expires and
another takes it): ``apply`` (check the TTL indexes and the lifecycle rule, create
what is missing, fix what is wrong), then, for each location whose mode is ``sweep``
(``modes``), delete what is older than the cutoff (``sweep``), and measure the oldest
document or object left, for the metrics. The cutoff, ``now - DELETION_INSTAGRAM_RETENTION``,
is computed once per pass; ``run(now=...)`` takes the clock from the caller (tests).
Only the two collections and the cache bucket of the rules are ever touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import metrics, repository
from app.models import utcnow
from app.retention_status import RetentionMode, RetentionStore
from app.services.evidence.retention import apply
from app.services.evidence.retention.report import RetentionItem, RetentionReport, store_failure
from app.services.evidence.retention.sweep import oldest_document, scan_bucket, sweep_collection
from app.settings import Settings
from app.stores import Stores

log = structlog.get_logger(__name__)

LEASE = "retention"


class LeaseLost(RuntimeError):
    """Another worker took the retention lease (this one stalled past its expiry)."""


@dataclass(frozen=True)
class LocationOutcome:
    """What a pass did at one location (no personal data: counts, ages, codes)."""

    store: RetentionStore
    location: str
    mode: RetentionMode
    reason: str
    swept: int = 0
    oldest_seconds: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class RetentionPass:
    report: RetentionReport
    outcomes: list[LocationOutcome]


class _Renewing:
    """Progress of a sweep: counts each batch and renews the lease before the next one."""

    def __init__(self, enforcer: RetentionEnforcer, store: RetentionStore, location: str) -> None:
        self._enforcer = enforcer
        self._labels = {"store": store.value, "location": location}

    async def deleted(self, counts: Mapping[str, int]) -> None:
        metrics.RETENTION_SWEPT.labels(**self._labels).inc(sum(counts.values()))
        if not await self._enforcer.take_lease():
            raise LeaseLost("the retention lease was taken by another worker")


class RetentionEnforcer:
    """One process's retention passes (the worker calls :meth:`run` periodically)."""

    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        sessionmaker: async_sessionmaker[AsyncSession],
        owner: str,
    ) -> None:
        self.settings = settings
        self.owner = owner
        self._stores = stores
        self._sessions = sessionmaker
        self.last: RetentionPass | None = None

    @property
    def configured(self) -> bool:
        return self._stores.mongo is not None or self._stores.s3 is not None

    async def take_lease(self) -> bool:
        now = utcnow()
        until = now + timedelta(seconds=self.settings.lease_seconds)
        async with self._sessions() as session:
            return await repository.take_lease(session, LEASE, self.owner, now, until)

    async def _release(self) -> None:
        async with self._sessions() as session:
            await repository.release_lease(session, LEASE, self.owner, utcnow())

    async def run(self, now: datetime | None = None) -> RetentionPass | None:
        """One pass; None when no store is configured or another worker is running one.
        Raises LeaseLost when the lease could not be renewed (the pass stops at once)."""
        if not self.configured:
            return None
        now = now or utcnow()
        cutoff = now - self.settings.instagram_retention
        if not await self.take_lease():
            log.info("retention_pass_skipped", reason="another worker holds the lease")
            return None
        work = asyncio.create_task(self._pass(cutoff, now))
        beat = asyncio.create_task(self._heartbeat(work))
        try:
            self.last = await work
        except asyncio.CancelledError:
            if beat.done() and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise LeaseLost("the retention lease could not be renewed") from None
            raise
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            await self._release()
        metrics.RETENTION_PASS.set(time.time())
        return self.last

    async def _heartbeat(self, work: asyncio.Task[RetentionPass]) -> None:
        """Renew the lease every third of it while the pass runs; stop the pass when that
        fails (another worker took it, or the tracking database does not answer)."""
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                renewed = await self.take_lease()
            except Exception as exc:
                log.warning("retention_lease_renewal_failed", error_type=type(exc).__name__)
                renewed = False
            if not renewed:
                work.cancel()
                return

    async def _pass(self, cutoff: datetime, now: datetime) -> RetentionPass:
        report = await apply(self._stores, self.settings)
        outcomes = [await self._enforce(item, cutoff, now) for item in report.items]
        return RetentionPass(report, outcomes)

    async def _enforce(
        self, item: RetentionItem, cutoff: datetime, now: datetime
    ) -> LocationOutcome:
        assert item.mode is not None and item.mode_reason is not None
        outcome = LocationOutcome(item.store, item.name, item.mode, item.mode_reason)
        if item.mode is RetentionMode.none:
            return outcome
        sweep = item.mode is RetentionMode.sweep
        progress = _Renewing(self, item.store, item.name)
        try:
            if item.store is RetentionStore.mongodb:
                assert self._stores.mongo is not None  # else the mode is none
                collection = self._stores.mongo[self.settings.mongodb_database][
                    item.name.split(".", 1)[1]
                ]
                swept = 0
                if sweep:
                    batch = self.settings.mongodb_batch_size
                    swept = await sweep_collection(collection, cutoff, batch, item.name, progress)
                oldest = await oldest_document(collection)
            else:
                swept, oldest = await scan_bucket(
                    self._stores.s3, item.name, cutoff if sweep else None, progress
                )
        except LeaseLost:
            raise
        except Exception as exc:
            failure = store_failure(exc)
            detail = failure[1] if failure is not None else type(exc).__name__
            log.warning(
                "retention_sweep_failed", store=item.store.value, location=item.name, error=detail
            )
            return LocationOutcome(item.store, item.name, item.mode, item.mode_reason, error=detail)
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        metrics.RETENTION_OLDEST.labels(store=item.store.value, location=item.name).set(age)
        if swept:
            log.info("retention_swept", store=item.store.value, location=item.name, count=swept)
        return LocationOutcome(
            item.store, item.name, item.mode, item.mode_reason, swept=swept, oldest_seconds=age
        )
