"""Named, expiring leases (``service_leases``): one worker at a time runs a job.

``take_lease`` takes a lease that is free, expired or already the caller's (which renews
it); ``release_lease`` lets it go. Both commit. On PostgreSQL the conditional UPDATE
re-reads a row that another transaction changed meanwhile, and the INSERT of a lease
that nobody held yet has the primary key to settle a race: of two workers, one wins.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ServiceLease


async def take_lease(
    session: AsyncSession, name: str, owner: str, now: datetime, until: datetime
) -> bool:
    """Take (or renew) lease ``name`` for ``owner`` until ``until``; False when another
    owner holds it unexpired."""
    result = await session.execute(
        sa.update(ServiceLease)
        .where(
            ServiceLease.name == name,
            sa.or_(ServiceLease.owner == owner, ServiceLease.expires_at <= now),
        )
        .values(owner=owner, expires_at=until)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0):
        await session.commit()
        return True
    session.add(ServiceLease(name=name, owner=owner, expires_at=until))
    try:
        await session.commit()
    except IntegrityError:  # held by another owner, or taken by one just now
        await session.rollback()
        return False
    return True


async def release_lease(session: AsyncSession, name: str, owner: str, now: datetime) -> None:
    """Let lease ``name`` go, if ``owner`` still holds it."""
    await session.execute(
        sa.update(ServiceLease)
        .where(ServiceLease.name == name, ServiceLease.owner == owner)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
