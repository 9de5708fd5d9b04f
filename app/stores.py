"""The clients of the stores the service deletes from, opened and closed by the lifespan.

Nothing here connects: clients are built from settings (so that unusable
settings stop the service at start-up), and connect on first use.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine
from app.purgers.base import PurgerName
from app.settings import Settings


class StoreConfigError(RuntimeError):
    """A store's settings are present but unusable: the service must not start."""


@dataclass
class Stores:
    http: httpx.AsyncClient
    target_engine: AsyncEngine | None = None
    mongo: Any | None = None  # pymongo.AsyncMongoClient
    s3: Any | None = None  # an entered aiobotocore S3 client
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def aclose(self) -> None:
        await self._stack.aclose()


async def open_stores(settings: Settings) -> Stores:
    stack = AsyncExitStack()
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
    stack.push_async_callback(http.aclose)
    stores = Stores(http=http, _stack=stack)
    try:
        if settings.target_postgres_url:
            try:
                stores.target_engine = create_engine(settings.target_postgres_url)
            except Exception as exc:
                raise StoreConfigError(
                    f"DELETION_TARGET_POSTGRES_URL is not usable ({type(exc).__name__})"
                ) from exc
            stack.push_async_callback(stores.target_engine.dispose)
        if settings.mongodb_url:
            stores.mongo = _mongo_client(settings.mongodb_url)
            stack.push_async_callback(stores.mongo.close)
        if await s3_configured(settings):
            stores.s3 = await _s3_client(settings, stack)
    except BaseException:
        await stack.aclose()
        raise
    return stores


def _mongo_client(url: str) -> Any:
    from pymongo import AsyncMongoClient
    from pymongo.errors import ConfigurationError, InvalidURI

    try:
        return AsyncMongoClient(url, tz_aware=True, connect=False)
    except (ConfigurationError, InvalidURI, ValueError) as exc:
        raise StoreConfigError(f"DELETION_MONGODB_URL is not usable: {exc}") from exc


async def s3_configured(settings: Settings) -> bool:
    """Whether this deployment uses S3: as ``DELETION_S3_ENABLED`` says; else when an
    endpoint is set, or botocore's own credential chain finds credentials (variables,
    shared files, web identity, container or instance profile). Never for a store
    declared absent."""
    if PurgerName.s3 in settings.absent_stores:
        return False
    if settings.s3_enabled_setting is not None:
        return settings.s3_enabled_setting
    if settings.s3_endpoint_url is not None:
        return True
    from aiobotocore.session import get_session

    try:
        return await get_session().get_credentials() is not None
    except Exception as exc:  # a broken profile or credential file is a configuration error
        raise StoreConfigError(
            f"the AWS credentials of this host are not usable ({type(exc).__name__})"
        ) from exc


async def _s3_client(settings: Settings, stack: AsyncExitStack) -> Any:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=20,
    )
    try:
        client = get_session().create_client(
            "s3",
            region_name=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            config=config,
        )
        return await stack.enter_async_context(client)
    except ValueError as exc:
        raise StoreConfigError(f"DELETION_S3_ENDPOINT_URL is not usable: {exc}") from exc
