"""The engine: one worker's executor, from claim to release, wired from the package's parts.

It claims a due request under a lease (:mod:`.lease`) and, holding it, carries it out
(:mod:`.runner`: resolve, run its tasks, settle); a request that completed goes straight
on, under the same claim, to its confirmations and minimisation (:mod:`.completion`). A
request claimed when its run is already over (cancelled; completed, with a confirmation
to retry or a worker that died before it was done) gets only that completion step. Its
sweeps (:mod:`.sweeps`) are run by the :class:`~app.services.execution.worker.Worker`
now and then.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from functools import partial

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import repository
from app.models import RequestStatus
from app.purgers.base import PurgerName, PurgerSlot
from app.services.execution.completion import Completion
from app.services.execution.lease import Claimed, Leases
from app.services.execution.runner import Runner
from app.services.execution.sweeps import Sweeps
from app.services.intake.meta.callbacks import MetaCallbacks
from app.services.resolution import ResolverLike
from app.settings import Settings

# Nothing left to run: such a request is claimed only for its confirmations and
# minimisation (a cancelled one; a completed one whose confirmation is retried later, or
# whose worker died before it was done).
RUN_OVER = (RequestStatus.completed, RequestStatus.cancelled)


class Engine:
    """One worker's executor: ``claim`` a due request, then ``run_claimed`` it."""

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
        self.worker_id = worker_id
        self._sessions = sessionmaker
        self._leases = Leases(settings, sessionmaker, worker_id)
        self._runner = Runner(
            settings,
            sessionmaker,
            self._leases,
            purgers,
            resolver,
            datamap_version=datamap_version,
        )
        self._completion = Completion(settings, sessionmaker, self._leases, http=http)
        self._sweeps = Sweeps(settings, sessionmaker, worker_id, meta=meta, http=http)

    async def claim(self) -> repository.Claim | None:
        return await self._leases.claim()

    async def claim_batch(self, limit: int, long_limit: int | None = None) -> list[Claimed]:
        """Up to ``limit`` due requests (at most ``long_limit`` of a long kind), claimed and
        read in one transaction."""
        return await self._leases.claim_batch(limit, long_limit)

    async def run_claimed(self, request_id: uuid.UUID, claimed: Claimed | None = None) -> None:
        """Work on a claimed request, with heartbeats, until its tasks have settled (or its
        confirmations are done). ``claimed``: the request as its claim read it."""
        await self._leases.hold(request_id, partial(self._work, request_id, claimed))

    async def _work(self, request_id: uuid.UUID, claimed: Claimed | None = None) -> None:
        if claimed is not None:
            request, tasks = claimed.request, claimed.tasks
        else:
            async with self._sessions() as session:
                found = await repository.get_request(session, request_id)
                if found is None:
                    return
                request = found
                tasks = list(await repository.get_tasks(session, request_id))
        if request.status in RUN_OVER:
            await self._completion.notify_and_minimise(request_id)
            return
        settled = await self._runner.run(request, tasks)
        if settled is not None and settled.claim_kept:
            await self._completion.notify_and_minimise(request_id)

    # --- the sweeps, as the worker runs them --------------------------------------------

    async def check_deadlines(self) -> tuple[int, int]:
        return await self._sweeps.check_deadlines()

    async def expire_confirmations(self) -> int:
        return await self._sweeps.expire_confirmations()

    async def expire_reviews(self) -> int:
        return await self._sweeps.expire_reviews()

    async def mail_unsent_links(self) -> int:
        return await self._sweeps.mail_unsent_links()

    async def expand_deauthorizations(self) -> int:
        return await self._sweeps.expand_deauthorizations()

    async def notify_operators(self) -> int:
        return await self._sweeps.notify_operators()
