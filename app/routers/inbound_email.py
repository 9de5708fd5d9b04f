"""E-mail intake for mail gateways: one raw message per POST (``message/rfc822``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status

from app.deps import State, Writer
from app.errors import PayloadTooLarge, UnsupportedMediaType
from app.routers.requests import problems
from app.schemas import InboundEmailOut
from app.services.intake.email.inbound import MAX_MESSAGE_BYTES

router = APIRouter(prefix="/v1", tags=["e-mail intake"])

RAW_MESSAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "message/rfc822": {
                "schema": {"type": "string", "format": "binary"},
                "example": (
                    "From: owner@example.com\r\nTo: privacy@soundops.example\r\n"
                    "Subject: Delete my account\r\nMessage-ID: <1@example.com>\r\n\r\n"
                    "Please delete the site the-band.\r\n"
                ),
            }
        },
        "description": "One raw e-mail (headers and body, as received), at most 1 MiB.",
    }
}


async def raw_message(request: Request) -> bytes:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "message/rfc822":
        raise UnsupportedMediaType(
            "The body must be one raw e-mail (Content-Type: message/rfc822)."
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_MESSAGE_BYTES:
        raise PayloadTooLarge(f"A message may be at most {MAX_MESSAGE_BYTES} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_MESSAGE_BYTES:
            raise PayloadTooLarge(f"A message may be at most {MAX_MESSAGE_BYTES} bytes.")
    return bytes(body)


@router.post(
    "/inbound-email",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=InboundEmailOut,
    summary="Hand over one e-mail sent to the privacy@ mailbox",
    description=(
        "For mail gateways. The message is read, never stored, and handled once by its "
        "`Message-ID`: `awaiting_confirmation` (a request was filed and a one-time link "
        "mailed to the address on file; nothing runs until it is confirmed), "
        "`needs_review` (filed for an operator: sender not on file, name matching nothing "
        "or several accounts, or DMARC failed), `duplicate` (this message, or an open "
        "request for the same subject, was handled before) or `ignored` (neither subject "
        "line; one explanatory reply, never to automatic senders). 413 over 1 MiB, 415 for "
        "another Content-Type, 503 when a database or the mail server is unreachable: send "
        "the same message again later, it will not be filed twice."
    ),
    responses=problems(401, 403, 413, 415, 503),
    openapi_extra=RAW_MESSAGE_BODY,
)
async def inbound_email(state: State, principal: Writer, request: Request) -> InboundEmailOut:
    raw = await raw_message(request)
    result = await state.inbound.handle(raw, via="http")
    return InboundEmailOut(outcome=result.outcome.value, request_id=result.request_id)
