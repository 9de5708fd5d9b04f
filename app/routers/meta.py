"""Meta's callbacks: ``POST /meta/...``, authenticated by ``signed_request``, not by JWT."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request

from app.deps import State
from app.http_errors import PROBLEM_CONTENT_TYPE
from app.schemas import MetaDeauthorizeOut, MetaDeletionOut, Problem
from app.services.intake.meta.callbacks import Family
from app.services.intake.meta.signed_request import InvalidSignedRequest

router = APIRouter(prefix="/meta", tags=["meta callbacks"])

MAX_BODY = 8192

FORM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["signed_request"],
                    "properties": {
                        "signed_request": {
                            "type": "string",
                            "description": "base64url(signature).base64url(payload), HMAC-SHA256",
                        }
                    },
                },
                # Not signed with any real secret: answered 400.
                "example": {"signed_request": "c2lnbmF0dXJl.eyJ1c2VyX2lkIjoiMCJ9"},
            }
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": Problem,
        "content": {PROBLEM_CONTENT_TYPE: {}},
        "description": (
            "The signed_request is missing, malformed, not canonical base64url, not signed "
            "with the secret, or issued too long ago (DELETION_META_MAX_AGE_SECONDS) or in "
            "the future; nothing changes."
        ),
    },
    503: {
        "model": Problem,
        "content": {PROBLEM_CONTENT_TYPE: {}},
        "description": "This login family's app secret is not configured.",
    },
}


async def signed_request_field(request: Request) -> str | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise InvalidSignedRequest("signed_request is too large")
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidSignedRequest("the body is not a form with signed_request") from exc
    values = fields.get("signed_request")
    return values[0] if values else None


async def _deletion(state: State, request: Request, family: Family) -> MetaDeletionOut:
    filed = await state.meta.data_deletion(family, await signed_request_field(request))
    if state.worker is not None:
        state.worker.wake()
    return MetaDeletionOut(
        url=state.requests.status_url(filed), confirmation_code=filed.confirmation_code
    )


async def _deauthorize(state: State, request: Request, family: Family) -> MetaDeauthorizeOut:
    result = await state.meta.deauthorize(family, await signed_request_field(request))
    if state.worker is not None:
        state.worker.wake()
    return MetaDeauthorizeOut(
        expanded=result.expanded,
        disconnects=result.disconnects,
        skipped_reconnected=result.skipped_reconnected,
    )


@router.post(
    "/data-deletion",
    response_model=MetaDeletionOut,
    summary="Data Deletion Request Callback (Facebook Login)",
    description="Files a `meta_data` request for `facebook_user_id = user_id`.",
    openapi_extra=FORM_BODY,
    responses=ERRORS,
)
async def facebook_data_deletion(state: State, request: Request) -> MetaDeletionOut:
    return await _deletion(state, request, "facebook")


@router.post(
    "/instagram/data-deletion",
    response_model=MetaDeletionOut,
    summary="Data Deletion Request Callback (Instagram Login)",
    description="Files a `meta_data` request for `ig_user_id = user_id`.",
    openapi_extra=FORM_BODY,
    responses=ERRORS,
)
async def instagram_data_deletion(state: State, request: Request) -> MetaDeletionOut:
    return await _deletion(state, request, "instagram")


@router.post(
    "/deauthorize",
    response_model=MetaDeauthorizeOut,
    summary="Deauthorize Callback (Facebook Login)",
    description=(
        "Disconnects every account that person connected before removing the app. The "
        "verified callback is recorded first and answered 200 also while the SoundOps "
        "database is down or not configured, or in a burst of callbacks beyond the few "
        "that a process expands at once (`expanded: false`): a worker files the "
        "disconnects then."
    ),
    openapi_extra=FORM_BODY,
    responses=ERRORS,
)
async def facebook_deauthorize(state: State, request: Request) -> MetaDeauthorizeOut:
    return await _deauthorize(state, request, "facebook")


@router.post(
    "/instagram/deauthorize",
    response_model=MetaDeauthorizeOut,
    summary="Deauthorize Callback (Instagram Login)",
    description=(
        "Disconnects every account that person connected, by `ig_user_id`; recorded and "
        "answered 200 also while the SoundOps database is down, or in a burst "
        "(`expanded: false`)."
    ),
    openapi_extra=FORM_BODY,
    responses=ERRORS,
)
async def instagram_deauthorize(state: State, request: Request) -> MetaDeauthorizeOut:
    return await _deauthorize(state, request, "instagram")
