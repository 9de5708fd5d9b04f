"""Intake stores a request in one transaction, insert first: the unique indexes decide.

On both tracking backends: identical requests filed at the same time give one request
(one set of tasks, hashes and one ``created`` event), replays of an Idempotency-Key give
the first request, and what ``create`` returns is what a later read returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
import sqlalchemy as sa

from app.errors import Conflict
from app.models import (
    DeletionEvent,
    DeletionRequest,
    DeletionTask,
    RequestKind,
    SubjectHash,
)
from app.routers.presenters import request_out
from app.routers.requests import new_deletion
from app.schemas import CreateAccountDeletion
from app.services.intake.command import FiledRequest, FiledTask
from app.services.intake.rest import Intake
from app.state import AppState
from app.subjects import AccountSubject


def account(**subject: str) -> CreateAccountDeletion:
    return CreateAccountDeletion(kind=RequestKind.account, subject=AccountSubject(**subject))


async def create(
    state: AppState,
    body: CreateAccountDeletion,
    *,
    requested_by: str,
    idempotency_key: str | None = None,
) -> Intake:
    return await state.requests.create(
        new_deletion(body, requested_by=requested_by, idempotency_key=idempotency_key)
    )


def shown(obj: object, view: type) -> dict[str, object]:
    """The fields of a filed request's (or task's) view, read from ``obj``."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(view) if f.name != "tasks"}


async def counts(state: AppState, request_id: uuid.UUID) -> dict[str, int]:
    async with state.sessionmaker() as session:
        result = {}
        for name, column in (
            ("requests", DeletionRequest.id),
            ("tasks", DeletionTask.request_id),
            ("hashes", SubjectHash.request_id),
            ("events", DeletionEvent.request_id),
        ):
            query = sa.select(sa.func.count()).where(column == request_id)
            result[name] = int((await session.execute(query)).scalar_one())
        return result


async def test_what_create_returns_is_what_is_stored(state: AppState) -> None:
    intake = await create(state, account(site_name="the-band"), requested_by="backend")
    assert intake.created
    stored = await state.requests.get(intake.request.id)
    url = state.requests.status_url(stored)
    assert request_out(intake.request, url) == request_out(stored, url)
    # Every field of what create returns (the rows it stored) is as the database has it.
    assert shown(intake.request, FiledRequest) == shown(stored, FiledRequest)
    assert [shown(t, FiledTask) for t in intake.request.tasks] == [
        shown(t, FiledTask) for t in stored.tasks
    ]
    assert stored.notify_attempts == 0 and stored.tasks[0].attempts == 0
    assert await counts(state, stored.id) == {"requests": 1, "tasks": 4, "hashes": 1, "events": 1}


@pytest.mark.parametrize("with_key", [False, True])
async def test_identical_requests_at_once_file_one(state: AppState, with_key: bool) -> None:
    body = account(tenant_id=str(uuid.uuid4()))
    key = "same-key" if with_key else None
    results: list[Intake] = await asyncio.gather(
        *(create(state, body, requested_by="backend", idempotency_key=key) for _ in range(6))
    )
    assert sorted(r.created for r in results) == [False] * 5 + [True]
    assert len({r.request.id for r in results}) == 1
    request_id = results[0].request.id
    assert await counts(state, request_id) == {"requests": 1, "tasks": 4, "hashes": 1, "events": 1}
    async with state.sessionmaker() as session:
        total = (await session.execute(sa.select(sa.func.count(DeletionRequest.id)))).scalar_one()
    assert total == 1


async def test_a_replayed_key_with_another_body_is_a_conflict_and_files_nothing(
    state: AppState,
) -> None:
    first = await create(
        state, account(site_name="first-band"), requested_by="backend", idempotency_key="k-1"
    )
    with pytest.raises(Conflict):
        await create(
            state, account(site_name="other-band"), requested_by="backend", idempotency_key="k-1"
        )
    replay = await create(
        state, account(site_name="first-band"), requested_by="backend", idempotency_key="k-1"
    )
    assert (first.created, replay.created) == (True, False)
    assert replay.request.id == first.request.id
    async with state.sessionmaker() as session:
        total = (await session.execute(sa.select(sa.func.count(DeletionRequest.id)))).scalar_one()
        events = (await session.execute(sa.select(sa.func.count(DeletionEvent.id)))).scalar_one()
    assert (total, events) == (1, 1)
