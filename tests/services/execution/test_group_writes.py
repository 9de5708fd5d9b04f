"""Group commit of a claimed request's writes (``GroupWrites``), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from app.db import create_engine, create_sessionmaker
from app.services.execution.lease import Leases, Transition
from tests.app_fixtures import make_settings
from tests.tracking_rows import running_request


async def test_a_write_submitted_during_a_transaction_is_seen_as_queued_by_its_finish(
    tracking_url: str,
) -> None:
    """The runner settles a request in the transaction of its last outcome only when no
    write waits for a later one: an outcome submitted while the previous transaction is
    under way lands after it, and settling first would release the claim under it (the
    outcome then fails as a lost lease)."""
    engine = create_engine(tracking_url)
    sessions = create_sessionmaker(engine)
    now = datetime.now(UTC)
    request = running_request(
        run_after=now, lease_owner="w1", lease_expires_at=now + timedelta(minutes=5)
    )
    seen: list[bool] = []
    inside = asyncio.Event()
    go_on = asyncio.Event()
    try:
        async with sessions() as session:
            session.add(request)
            await session.commit()
        leases = Leases(make_settings(tracking_url), sessions, "w1")

        async def finish(tx: Transition) -> None:
            seen.append(writes.queued)

        writes = leases.group(request.id, finish)

        async def first(tx: Transition) -> None:
            tx.record("first")
            inside.set()
            await go_on.wait()

        async def second(tx: Transition) -> None:
            tx.record("second")

        first_done = writes.submit(first)
        await asyncio.wait_for(inside.wait(), 10)
        second_done = writes.submit(second)  # the first transaction is under way
        go_on.set()
        await asyncio.wait_for(asyncio.gather(first_done, second_done), 10)
    finally:
        await engine.dispose()

    assert seen == [True, False]
