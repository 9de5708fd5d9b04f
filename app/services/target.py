"""Read-only look-ups in the SoundOps main database that intake needs."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine


class TargetUnavailable(Exception):
    """The SoundOps database could not be reached."""


async def account_belongs_to_tenant(
    engine: AsyncEngine, tenant_id: uuid.UUID, instagram_account_id: uuid.UUID
) -> bool:
    query = sa.text(
        "SELECT 1 FROM instagram_accounts WHERE id = :account_id AND tenant_id = :tenant_id"
    )
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                query, {"account_id": instagram_account_id, "tenant_id": tenant_id}
            )
            return result.first() is not None
    except (OperationalError, DBAPIError, OSError) as exc:
        raise TargetUnavailable from exc
