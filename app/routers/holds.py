"""Legal holds (`/v1/holds`, scope `deletions:admin`): place, list, read, release."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.deps import Admin, State
from app.routers.presenters import hold_out
from app.routers.requests import problems
from app.schemas import CreateHold, HoldOut, HoldPage

router = APIRouter(prefix="/v1/holds", tags=["legal holds"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=HoldOut,
    summary="Place a legal hold on a subject",
    description=(
        "The subject's deletion requests wait in `on_hold` (not overdue while held) until "
        "the hold is released: pending ones at once, new ones when filed, a running one "
        "before its next task. Requests of other subjects are not touched. The public "
        "status page says the request is on hold, never why."
    ),
    responses=problems(401, 403, 413, 422),
)
async def place_hold(state: State, principal: Admin, body: CreateHold) -> HoldOut:
    placed = await state.holds.place(
        body.subject.identities(), reason=body.reason, actor=principal.subject
    )
    return hold_out(placed.hold, held_requests=placed.held_requests)


@router.get(
    "",
    response_model=HoldPage,
    summary="List legal holds",
    description=(
        "Active holds, newest first; `include_released=true` adds released ones (their "
        "subject as keyed hashes, no reason). Pass `next_cursor` back as `cursor`."
    ),
    responses=problems(401, 403, 422),
)
async def list_holds(
    state: State,
    _principal: Admin,
    include_released: Annotated[
        bool, Query(description="Also released holds (for audit).")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="From a previous page.")
    ] = None,
) -> HoldPage:
    rows, next_cursor = await state.holds.list(
        include_released=include_released, limit=limit, cursor=cursor
    )
    return HoldPage(items=[hold_out(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/{hold_id}",
    response_model=HoldOut,
    summary="Read one legal hold",
    description=(
        "An active hold with the identities it holds and its reason; a released one with "
        "its subject as keyed hashes and no reason."
    ),
    responses=problems(401, 403, 404, 422),
)
async def get_hold(state: State, _principal: Admin, hold_id: uuid.UUID) -> HoldOut:
    return hold_out(await state.holds.get(hold_id))


@router.delete(
    "/{hold_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Release a legal hold",
    description=(
        "The subject's requests that no other active hold matches go back to `pending` "
        "and run. The hold is kept for audit with its subject as keyed hashes and without "
        "its reason. 409 when it was released already."
    ),
    responses=problems(401, 403, 404, 409, 422),
)
async def release_hold(state: State, principal: Admin, hold_id: uuid.UUID) -> Response:
    released = await state.holds.release(hold_id, actor=principal.subject)
    if released.resumed_requests and state.worker is not None:
        state.worker.wake()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
