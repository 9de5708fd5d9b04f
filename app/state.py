"""What the lifespan builds and hands to the routers: typed, created once, closed once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth import TokenVerifier
from app.datamap import DataMap
from app.purgers.base import PurgerName, PurgerSlot
from app.ratelimit import RateLimiter
from app.services.execution import Worker
from app.services.holds import HoldService
from app.services.intake.email.inbound import InboundMail
from app.services.intake.email.service import EmailRequests
from app.services.intake.meta.callbacks import MetaCallbacks
from app.services.intake.rest import RequestService
from app.services.preview import PreviewService
from app.services.resolution import ResolverLike
from app.settings import Settings
from app.stores import Stores


@dataclass
class AppState:
    settings: Settings
    tracking_db: AsyncEngine  # the service's own tables (SQLAlchemy); not the executor
    sessionmaker: async_sessionmaker[AsyncSession]
    stores: Stores
    datamap: DataMap
    verifier: TokenVerifier
    requests: RequestService  # file, read, cancel, retry requests; receipts
    holds: HoldService  # legal holds: place, list, release
    purgers: Mapping[PurgerName, PurgerSlot]
    resolver: ResolverLike
    preview: PreviewService
    meta: MetaCallbacks
    status_limiter: RateLimiter
    email_requests: EmailRequests
    inbound: InboundMail
    worker: Worker | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        return self.stores.http
