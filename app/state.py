"""What the lifespan builds and hands to the routers: typed, created once, closed once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth import TokenVerifier
from app.purgers.base import PurgerName
from app.services.engine import PurgerSlot, Worker
from app.services.requests import RequestService
from app.settings import Settings


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    verifier: TokenVerifier
    requests: RequestService
    purgers: Mapping[PurgerName, PurgerSlot]
    target_engine: AsyncEngine | None = None
    worker: Worker | None = None
