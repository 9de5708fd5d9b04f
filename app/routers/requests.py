"""REST intake and reading of deletion requests (`/v1/deletion-requests`)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response, status

from app.auth import Scope
from app.deps import Admin, Reader, State, Writer
from app.errors import Unprocessable
from app.models import RequestKind, RequestSource, RequestStatus
from app.repository import RequestFilter
from app.routers.presenters import preview_out, request_out
from app.schemas import (
    CREATE_EXAMPLES,
    CancelBody,
    CreateDeletionRequest,
    DeletionRequestOut,
    DeletionRequestPage,
    PreviewOut,
    Problem,
    SignedReceiptOut,
)
from app.services.identities import lookup_hash
from app.services.intake.command import NewDeletion, fingerprint
from app.state import AppState


def new_deletion(
    body: CreateDeletionRequest, *, requested_by: str, idempotency_key: str | None = None
) -> NewDeletion:
    """The request a create's body asks for (its fingerprint: the body, as JSON)."""
    return NewDeletion(
        kind=RequestKind(body.kind),
        identities=body.subject.identities(),
        source=RequestSource(body.source),
        requested_by=requested_by,
        fingerprint=fingerprint(body.model_dump(mode="json")),
        notify_email=body.notify_email,
        reason=body.reason,
        idempotency_key=idempotency_key,
    )


PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        401: "Missing or invalid bearer token.",
        403: "The token lacks the required scope.",
        404: "Not found.",
        409: "Conflicts with the request's current state.",
        413: "The body is over the size limit (64 KiB for JSON).",
        415: "The body's Content-Type is not the one required.",
        422: "Malformed body or parameters.",
        503: "A store needed to answer is unreachable; retry later.",
    }
    return {code: {**PROBLEM, "description": descriptions[code]} for code in codes}


router = APIRouter(prefix="/v1/deletion-requests", tags=["deletion requests"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Replaying the same key with the same body returns the first request (200).",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeletionRequestOut,
    summary="File a deletion request",
    description=(
        "Files a request of one of three kinds. A new request answers 202; a replayed "
        "`Idempotency-Key`, or an open request of the same kind for the same subject, "
        "answers 200 with the existing request."
    ),
    responses={
        200: {
            "model": DeletionRequestOut,
            "description": "An existing request (replay or open duplicate).",
        },
        **problems(401, 403, 404, 409, 413, 422, 503),
    },
)
async def create_request(
    request: Request,
    principal: Writer,
    response: Response,
    body: Annotated[CreateDeletionRequest, Body(openapi_examples=CREATE_EXAMPLES)],
    idempotency_key: IdempotencyKey = None,
) -> DeletionRequestOut:
    # The state from the request, not from the State dependency: one level of dependency
    # resolution less on the busiest route (FastAPI solves each level per request).
    state: AppState = request.app.state.services
    intake = await state.requests.create(
        new_deletion(body, requested_by=principal.subject, idempotency_key=idempotency_key)
    )
    if intake.created and state.worker is not None:
        state.worker.wake()
    if not intake.created:
        response.status_code = status.HTTP_200_OK
    return request_out(intake.request, state.requests.status_url(intake.request))


@router.post(
    "/preview",
    response_model=PreviewOut,
    summary="Preview what a request would delete",
    description=(
        "Same body as a create. Deletes nothing and records nothing: answers, per store, "
        "the exact counts that a request would delete and retain (with the reason)."
    ),
    responses=problems(401, 403, 413, 422, 503),
)
async def preview_request(
    state: State,
    _principal: Writer,
    body: Annotated[CreateDeletionRequest, Body(openapi_examples=CREATE_EXAMPLES)],
) -> PreviewOut:
    items = await state.preview.preview(RequestKind(body.kind), body.subject.identities())
    return preview_out(items)


@router.get(
    "",
    response_model=DeletionRequestPage,
    summary="List deletion requests",
    description="Newest first. Pass `next_cursor` back as `cursor` for the next page.",
    responses=problems(401, 403, 422),
)
async def list_requests(
    state: State,
    _principal: Reader,
    status_: Annotated[
        RequestStatus | None, Query(alias="status", description="Only requests in this status.")
    ] = None,
    kind: Annotated[RequestKind | None, Query(description="Only requests of this kind.")] = None,
    overdue: Annotated[bool, Query(description="Only open requests past their `due_at`.")] = False,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="From a previous page.")
    ] = None,
    subject: Annotated[
        str | None,
        Query(
            max_length=400,
            description=(
                "`identity=value` (e.g. `site_name=the-band`, `ig_user_id=1784…`): requests that "
                "named or resolved to it, also after their identifiers were minimised."
            ),
        ),
    ] = None,
) -> DeletionRequestPage:
    subject_hash = None
    if subject is not None:
        try:
            subject_hash = lookup_hash(state.settings.effective_hash_key, subject)
        except ValueError as exc:
            raise Unprocessable(str(exc)) from exc
    rows, next_cursor = await state.requests.list(
        RequestFilter(status=status_, kind=kind, overdue=overdue, subject_hash=subject_hash),
        limit=limit,
        cursor=cursor,
    )
    return DeletionRequestPage(
        items=[request_out(row, state.requests.status_url(row)) for row in rows],
        next_cursor=next_cursor,
    )


@router.get(
    "/{request_id}",
    response_model=DeletionRequestOut,
    summary="Read one deletion request",
    description=(
        "The request with its per-store tasks: status, attempts, counts, errors, times. "
        "A request from e-mail in `needs_review` read with `deletions:admin` also shows "
        "`review`: what the message named and the candidates it matched."
    ),
    responses=problems(401, 403, 404, 422),
)
async def get_request(state: State, principal: Reader, request_id: uuid.UUID) -> DeletionRequestOut:
    request = await state.requests.get(request_id)
    return request_out(
        request, state.requests.status_url(request), admin=principal.allows(Scope.admin)
    )


@router.post(
    "/{request_id}/cancel",
    response_model=DeletionRequestOut,
    summary="Cancel a request that has not started",
    description=(
        "Only `pending`, `awaiting_confirmation` and `needs_review` requests can be cancelled."
    ),
    responses=problems(401, 403, 404, 409, 413, 422),
)
async def cancel_request(
    state: State,
    principal: Admin,
    request_id: uuid.UUID,
    body: Annotated[CancelBody | None, Body()] = None,
) -> DeletionRequestOut:
    request = await state.requests.cancel(
        request_id, actor=principal.subject, reason=body.reason if body else None
    )
    return request_out(request, state.requests.status_url(request))


@router.post(
    "/{request_id}/retry",
    response_model=DeletionRequestOut,
    summary="Retry a failed request",
    description=(
        "Re-queues a `failed` request: its failed tasks run again with fresh attempts; "
        "tasks that already succeeded are not repeated."
    ),
    responses=problems(401, 403, 404, 409, 422),
)
async def retry_request(
    state: State, principal: Admin, request_id: uuid.UUID
) -> DeletionRequestOut:
    request = await state.requests.retry(request_id, actor=principal.subject)
    if state.worker is not None:
        state.worker.wake()
    return request_out(request, state.requests.status_url(request))


@router.get(
    "/{request_id}/receipt",
    summary="The signed receipt of a finished request",
    description=(
        "What was deleted (counts) and retained (counts and legal reason) per store, the "
        "verification result and the data-map version, signed with Ed25519. No personal data. "
        "Verify with `soundops-deletion receipt verify FILE`."
    ),
    response_model=None,  # returned exactly as it was signed; documented by its model
    responses={
        200: {"model": SignedReceiptOut, "description": "The receipt and its signature."},
        **problems(401, 403, 404, 409, 422),
    },
)
async def get_receipt(state: State, _principal: Reader, request_id: uuid.UUID) -> dict[str, Any]:
    return await state.requests.receipt(request_id)
