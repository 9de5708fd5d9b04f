"""What a worker does besides claims, now and then: deadlines, expiries, deferred work.

- The 30-day deadline: open requests that come within reach of ``due_at``, or pass it,
  are recorded (an event and a log line), once each.
- Requests from e-mail: an unconfirmed link that expired, or a review that nobody
  decided within 30 days, cancels the request; links that intake filed but could not
  mail are mailed.
- Meta deauthorizations recorded when the SoundOps database was down or not configured
  are expanded into their disconnects.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import repository
from app.models import utcnow
from app.services.execution.lease import backoff
from app.services.intake import email as email_requests
from app.services.intake.meta.callbacks import MetaCallbacks
from app.settings import Settings

log = structlog.get_logger(__name__)


class Sweeps:
    """One worker's periodic sweeps; each returns how many requests it acted on."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        worker_id: str,
        *,
        meta: MetaCallbacks | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self._sessions = sessionmaker
        self._meta = meta

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
