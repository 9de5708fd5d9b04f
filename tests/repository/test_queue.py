"""The queue's claims, on SQLite and PostgreSQL: order and batches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app import repository
from app.db import create_engine, create_sessionmaker
from app.models import DeletionRequest, RequestKind, RequestStatus


def _request(kind: RequestKind, due_since: timedelta) -> DeletionRequest:
    now = datetime.now(UTC)
    return DeletionRequest(
        id=uuid.uuid4(),
        kind=kind.value,
        status=RequestStatus.pending.value,
        requested_by="test",
        subject={"site_name": uuid.uuid4().hex},
        subject_key=uuid.uuid4().hex,
        confirmation_code=uuid.uuid4().hex,
        due_at=now + timedelta(days=30),
        run_after=now - due_since,
    )


async def test_disconnects_are_claimed_first_then_the_longest_due_in_batches(
    tracking_url: str,
) -> None:
    """Short work never queues behind long work: a disconnect due for a second goes
    before account deletions due for an hour; a batch takes several at once, and a
    second worker's batch takes none of the first's."""
    engine = create_engine(tracking_url)
    sessions = create_sessionmaker(engine)
    older = _request(RequestKind.account, timedelta(hours=1))
    old = _request(RequestKind.account, timedelta(minutes=30))
    disconnect = _request(RequestKind.instagram_disconnect, timedelta(seconds=1))
    later = _request(RequestKind.account, timedelta(hours=-1))  # not due yet
    try:
        async with sessions() as session:
            session.add_all([older, old, disconnect, later])
            await session.commit()
        now = datetime.now(UTC)
        lease = timedelta(minutes=1)
        async with sessions() as session:
            first = await repository.claim_batch(session, "w1", lease, now, 2)
            await session.commit()
        async with sessions() as session:
            second = await repository.claim_batch(session, "w2", lease, now, 5)
            await session.commit()
        async with sessions() as session:
            third = await repository.claim_batch(session, "w3", lease, now, 5)
            await session.commit()
            rows = {
                i: await session.get(DeletionRequest, i, populate_existing=True)
                for i in (older.id, old.id, disconnect.id)
            }
    finally:
        await engine.dispose()

    assert [c.request_id for c in first] == [disconnect.id, older.id]
    assert all(c.was_pending and c.previous_owner is None for c in first)
    assert [c.request_id for c in second] == [old.id]
    assert third == []
    owners = {i: r.lease_owner for i, r in rows.items() if r is not None}
    assert owners == {disconnect.id: "w1", older.id: "w1", old.id: "w2"}
    assert {r.status for r in rows.values() if r is not None} == {RequestStatus.running.value}


async def test_a_batch_takes_at_most_long_limit_long_requests_and_every_short_one(
    tracking_url: str,
) -> None:
    """A worker whose slots for long work are full still takes disconnects (long_limit=0),
    and never more long requests than it has room for."""
    engine = create_engine(tracking_url)
    sessions = create_sessionmaker(engine)
    accounts = [_request(RequestKind.account, timedelta(hours=h)) for h in (3, 2, 1)]
    disconnects = [_request(RequestKind.instagram_disconnect, timedelta(seconds=s)) for s in (2, 1)]
    now = datetime.now(UTC)
    lease = timedelta(minutes=1)
    try:
        async with sessions() as session:
            session.add_all([*accounts, *disconnects])
            await session.commit()
        async with sessions() as session:
            shorts_only = await repository.claim_batch(session, "w1", lease, now, 5, 0)
            await session.commit()
        async with sessions() as session:
            one_long = await repository.claim_batch(session, "w2", lease, now, 5, 1)
            await session.commit()
        async with sessions() as session:
            rest = await repository.claim_batch(session, "w3", lease, now, 5)
            await session.commit()
    finally:
        await engine.dispose()

    assert [c.request_id for c in shorts_only] == [disconnects[0].id, disconnects[1].id]
    assert [c.request_id for c in one_long] == [accounts[0].id]
    assert [c.request_id for c in rest] == [accounts[1].id, accounts[2].id]
