"""What a worker does besides claims, now and then: deadlines, expiries, deferred work.

- The 30-day deadline: open requests that come within reach of ``due_at``, or pass it,
  are recorded (an event and a log line), once each.
- Requests from e-mail: an unconfirmed link that expired, or a review that nobody
  decided within 30 days, cancels the request; links that intake filed but could not
  mail are mailed.
- Meta deauthorizations recorded when the SoundOps database was down or not configured
  are expanded into their disconnects.
- Operators are told of failed and overdue requests (``evidence.operator_notices``): a
  notice made once per event, delivered and retried with the completion's backoff.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final, Literal

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import repository
from app.models import utcnow
from app.services.evidence.operator_notices import OperatorNotices
from app.services.execution.lease import backoff
from app.services.intake import email as email_requests
from app.services.intake.meta.callbacks import MetaCallbacks
from app.settings import Settings

log = structlog.get_logger(__name__)

NEAR: Final[Literal["deadline_warned_at"]] = "deadline_warned_at"
LATE: Final[Literal["overdue_warned_at"]] = "overdue_warned_at"


class Sweeps:
    """One worker's periodic sweeps; each returns how many requests it acted on."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        worker_id: str,
        *,
        meta: MetaCallbacks | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self._sessions = sessionmaker
        self._meta = meta
        self._operators = OperatorNotices(settings, sessionmaker, http=http)

    async def check_deadlines(self) -> tuple[int, int]:
        """Record (event + log) open requests that come within reach of, or pass, ``due_at``."""
        now = utcnow()
        warn = timedelta(days=self.settings.deadline_warn_days)
        async with self._sessions() as session:
            near, overdue = await repository.deadline_candidates(session, now, warn)
            # Marked only where unset: a second worker's sweep records nothing again.
            near = [r for r in near if await repository.mark_deadline(session, r, NEAR, now)]
            for request_id in near:
                repository.add_event(session, request_id, "deadline_near", actor=self.worker_id)
                log.warning("request_deadline_near", request_id=str(request_id))
            overdue = [r for r in overdue if await repository.mark_deadline(session, r, LATE, now)]
            for request_id in overdue:
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

    async def notify_operators(self) -> int:
        """Make the notices of new failed/overdue events, then deliver the due ones; how
        many were delivered."""
        await self._operators.make_new(actor=self.worker_id)
        return await self._operators.deliver_due(
            owner=self.worker_id,
            lease=timedelta(seconds=self.settings.lease_seconds),
            retry_after=lambda attempts: backoff(self.settings, attempts),
        )
