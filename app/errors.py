"""One exception base that carries its HTTP status, and one RFC 9457 problem renderer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://soundops.example/problems/"

log = structlog.get_logger(__name__)


class ProblemError(Exception):
    """An error the API answers with a problem document. Subclasses set the class fields."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(ProblemError):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(ProblemError):
    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="soundops-deletion"'})


class Forbidden(ProblemError):
    status, slug, title = 403, "forbidden", "Missing scope"


class NotFound(ProblemError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(ProblemError):
    status, slug, title = 409, "conflict", "Conflict"


class PayloadTooLarge(ProblemError):
    status, slug, title = 413, "payload-too-large", "Payload too large"


class UnsupportedMediaType(ProblemError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class Unprocessable(ProblemError):
    status, slug, title = 422, "validation-error", "Request validation failed"


class TooManyRequests(ProblemError):
    status, slug, title = 429, "rate-limited", "Too many requests"


class ServiceUnavailable(ProblemError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (slug or str(status)),
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra or {})
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=dict(headers or {})
    )


# Message types that quote the schema (a pattern, the allowed values), never the input.
_SCHEMA_QUOTING = frozenset({"string_pattern_mismatch", "literal_error", "enum"})


def _safe_message(error_type: str, message: str) -> str:
    # Other messages may quote parts of the input ("found `x` at 0", "'<'"): keep the lead.
    if error_type not in _SCHEMA_QUOTING and any(q in message for q in ("`", "'", '"')):
        return message.split(":", 1)[0]
    return message


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors without their ``input`` and ``ctx`` values: those may be personal data."""
    cleaned = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        msg = _safe_message(str(error.get("type")), str(error.get("msg", "")))
        cleaned.append({"loc": loc, "msg": msg, "type": error.get("type")})
    return cleaned


_HTTP_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    413: "Payload too large",
    415: "Unsupported media type",
    429: "Too many requests",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            exc.status, exc.title, exc.detail, slug=exc.slug, headers=exc.headers, extra=exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(
            422,
            Unprocessable.title,
            "The request does not match the schema; see errors.",
            slug=Unprocessable.slug,
            extra={"errors": validation_errors(exc.errors())},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = _HTTP_TITLES.get(exc.status_code, "Error")
        # Framework errors (404 route, 405 method) carry no user data in their detail.
        detail = exc.detail if isinstance(exc.detail, str) else title
        return problem_response(exc.status_code, title, detail, headers=exc.headers)

    async def _store_down(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("tracking_store_unavailable", error_type=type(exc).__name__)
        return problem_response(
            503,
            ServiceUnavailable.title,
            "The tracking database is unreachable; nothing was changed. Retry later.",
            slug=ServiceUnavailable.slug,
            headers={"Retry-After": "30"},
        )

    for error_type in (OperationalError, InterfaceError, OSError, TimeoutError):
        app.add_exception_handler(error_type, _store_down)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", error_type=type(exc).__name__)
        return problem_response(500, ProblemError.title, "An unexpected error occurred.")
