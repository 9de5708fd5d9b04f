"""RFC 9457 problem documents over HTTP: one renderer and the app's exception handlers.

Every :class:`app.errors.ProblemError` a service raises, every validation error and every
framework error is answered as ``application/problem+json``; an unreachable tracking
database is a 503, anything unexpected a 500 that quotes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import ProblemError, ServiceUnavailable, Unprocessable, validation_errors

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://soundops.example/problems/"
VALIDATION_DETAIL = "The request does not match the schema; see errors."

log = structlog.get_logger(__name__)


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
            VALIDATION_DETAIL,
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

    @app.exception_handler(DBAPIError)
    async def _driver_error(request: Request, exc: DBAPIError) -> JSONResponse:
        # A pooled connection that the server closed (a restart, a failover, an admin
        # terminating it) fails its statement with whatever the server said last, e.g.
        # "terminating connection due to administrator command"; the pool drops it.
        if exc.connection_invalidated:
            return await _store_down(request, exc)
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", error_type=type(exc).__name__)
        return problem_response(500, ProblemError.title, "An unexpected error occurred.")
