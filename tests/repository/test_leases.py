"""The named, expiring leases (retention sweep), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from app import repository
from app.db import create_engine, create_sessionmaker


async def test_of_many_racing_owners_exactly_one_takes_the_lease(tracking_url: str) -> None:
    engine = create_engine(tracking_url)
    sessions = create_sessionmaker(engine)

    async def take(owner: str) -> bool:
        now = datetime.now(UTC)
        async with sessions() as session:
            return await repository.take_lease(
                session, "retention", owner, now, now + timedelta(minutes=1)
            )

    try:
        first = await asyncio.gather(*(take(f"w{i}") for i in range(8)))
        # Once held (the row exists), racing again: nobody else gets it.
        again = await asyncio.gather(*(take(f"x{i}") for i in range(8)))
        winner = f"w{first.index(True)}"
        renewed = await take(winner)
        async with sessions() as session:
            await repository.release_lease(session, "retention", winner, datetime.now(UTC))
        after_release = await take("x0")
    finally:
        await engine.dispose()

    assert first.count(True) == 1
    assert again.count(True) == 0
    assert renewed
    assert after_release
