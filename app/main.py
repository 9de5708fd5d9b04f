"""The FastAPI application: ``create_app()`` builds it; the lifespan owns every client."""

from __future__ import annotations

import asyncio
import functools
import gc
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.http_errors import install_error_handlers
from app.http_metrics import HttpMetricsMiddleware
from app.logging import configure_logging, correlation_id
from app.openapi_docs import install_openapi
from app.purgers.base import PurgerName, PurgerSlot
from app.request_guard import RequestGuardMiddleware
from app.routers import (
    admin,
    email_confirm,
    health,
    holds,
    inbound_email,
    meta,
    metrics,
    receipts,
    requests,
    retention,
    review,
    status_page,
)
from app.routers.docs import install_docs
from app.services.resolution import ResolverLike
from app.settings import Settings, get_settings
from app.wiring import build_state, close_state, new_worker

log = structlog.get_logger(__name__)

DESCRIPTION = """
Carries out personal-data deletion for SoundOps in PostgreSQL, MongoDB, S3 and at Meta,
and proves it: a request is `completed` only when every store has verified that nothing
of the subject is left.

Authenticate with **Authorize** and a bearer JWT carrying the scopes
`deletions:read`, `deletions:write` or `deletions:admin`
(`soundops-deletion token --scope deletions:admin` mints one locally).
Every error is an RFC 9457 `application/problem+json` document.
"""


class CorrelationIdMiddleware:
    """Every log line of an HTTP request carries its correlation id (the caller's
    X-Request-ID when it is a plain token, else a new one), echoed as X-Request-ID.

    A plain ASGI middleware: ``@app.middleware("http")`` would run every request in an
    extra task behind memory streams, a measurable share of an intake request's cost.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        given = next((v.decode("latin-1") for k, v in headers if k == b"x-request-id"), None)
        correlation = correlation_id(given)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = correlation
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=correlation):
            await self.app(scope, receive, send_with_id)


@functools.cache
def _freeze_startup_objects() -> None:
    """Move what exists after startup (modules, the app, its clients: ~190,000 objects)
    out of the garbage collector's sight, once per process: each full collection walked
    all of them, 0.2-0.3 s with the event loop stopped, twice in 10 s of intake at 64
    connections (the p99). What is allocated later is collected as before."""
    gc.collect()
    gc.freeze()


_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def _otel_configured() -> bool:
    return any(name.startswith("OTEL_") for name in os.environ)


def _paths(router: APIRouter) -> list[str]:
    return [route.path for route in router.routes if isinstance(route, APIRoute)]


def create_app(
    settings: Settings | None = None,
    *,
    purgers: Mapping[PurgerName, PurgerSlot] | None = None,
    resolver: ResolverLike | None = None,
) -> FastAPI:
    """The app; ``purgers`` and ``resolver`` replace the ones built from the settings
    (tests inject their doubles here, see :func:`build_state`)."""
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await build_state(settings, purgers=purgers, resolver=resolver)
        app.state.services = state
        _freeze_startup_objects()
        worker_task = asyncio.create_task(new_worker(state).run()) if settings.run_worker else None
        log.info("service_started", version=__version__, environment=settings.environment.value)
        try:
            yield
        finally:
            if worker_task is not None and state.worker is not None:
                state.worker.stop()
                await worker_task
            await close_state(state)

    app = FastAPI(
        # FastAPI's own OpenTelemetry instrumentation only where a deployment configures
        # OpenTelemetry (this service exports Prometheus metrics): unconfigured, it still
        # looks up three OTEL_* variables in the environment on every request.
        telemetry=None if _otel_configured() else _NO_TELEMETRY,
        title="soundops-deletion",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from local assets by app.routers.docs
        redoc_url=None,
        openapi_tags=[
            {"name": "deletion requests", "description": "File, follow and manage requests."},
            {"name": "legal holds", "description": "Hold a subject's deletions, release."},
            {"name": "meta callbacks", "description": "Meta's signed-request callbacks."},
            {"name": "public status", "description": "What a person sees, without login."},
            {"name": "operations", "description": "Health and readiness."},
        ],
    )
    install_error_handlers(app)

    # Bounded bodies and storable strings for every route; a raw e-mail (1 MiB) and Meta's
    # forms (8 KiB) are bounded by their routers while streaming. Inside the correlation
    # id, so that its answers carry one.
    own_limits = [*_paths(inbound_email.router), *_paths(meta.router)]
    app.add_middleware(RequestGuardMiddleware, own_limit_paths=own_limits)
    app.add_middleware(CorrelationIdMiddleware)
    app.add_middleware(HttpMetricsMiddleware)  # outermost: it times all of the above

    app.include_router(requests.router)
    app.include_router(receipts.router)
    app.include_router(retention.router)
    app.include_router(meta.router)
    app.include_router(status_page.router)
    app.include_router(review.router)
    app.include_router(holds.router)
    app.include_router(inbound_email.router)
    app.include_router(email_confirm.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(admin.router)  # the operators' console (not in the OpenAPI)
    install_docs(app)
    install_openapi(app)
    return app
