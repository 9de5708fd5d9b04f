"""Operators' review of requests that came by e-mail: approve or reject."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body

from app.deps import Admin, State
from app.routers.presenters import request_out
from app.routers.requests import problems
from app.schemas import ApproveBody, DeletionRequestOut, RejectBody

router = APIRouter(prefix="/v1/deletion-requests", tags=["deletion requests"])


@router.post(
    "/{request_id}/approve",
    response_model=DeletionRequestOut,
    summary="Approve a request from e-mail that needs review",
    description=(
        "Moves a `needs_review` request to `pending`, so that it runs. Give `subject` to "
        "carry out a corrected subject instead (validated as in a create of the request's "
        "kind), e.g. when the e-mail named nothing on file or several accounts. 409 for "
        "another status, or when an open request for the corrected subject exists."
    ),
    responses=problems(401, 403, 404, 409, 413, 422),
)
async def approve_request(
    state: State,
    principal: Admin,
    request_id: uuid.UUID,
    body: Annotated[ApproveBody | None, Body()] = None,
) -> DeletionRequestOut:
    request = await state.email_requests.approve(
        request_id, operator=principal.subject, subject=body.subject if body else None
    )
    if state.worker is not None:
        state.worker.wake()
    return request_out(request, state.requests.status_url(request))


@router.post(
    "/{request_id}/reject",
    response_model=DeletionRequestOut,
    summary="Reject a request from e-mail",
    description=(
        "Moves a `needs_review` or `awaiting_confirmation` request to `cancelled` with the "
        "reason; nothing is deleted, and its identifiers are then minimised. 409 for "
        "another status."
    ),
    responses=problems(401, 403, 404, 409, 413, 422),
)
async def reject_request(
    state: State,
    principal: Admin,
    request_id: uuid.UUID,
    body: Annotated[RejectBody | None, Body()] = None,
) -> DeletionRequestOut:
    request = await state.email_requests.reject(
        request_id, operator=principal.subject, reason=body.reason if body else None
    )
    if state.worker is not None:
        state.worker.wake()  # to minimise it
    return request_out(request, state.requests.status_url(request))
