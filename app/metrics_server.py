"""``/healthz`` and ``/metrics`` of the processes without an HTTP API (``worker``,
``mailbox poll``), on ``DELETION_METRICS_PORT`` when it is set.

Their task, retry and e-mail counters live in their own process: without this port
Prometheus would never see them. The queue gauges are read from the tracking database at
scrape time, as the API's ``/metrics`` does. ``/healthz`` answers 503 when the process's
loop has stalled, so that Kubernetes restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.settings import Environment, Settings

log = structlog.get_logger(__name__)


def metrics_app(tracking_db: AsyncEngine, healthy: Callable[[], bool]) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = healthy()
        return JSONResponse({"status": "ok" if ok else "stalled"}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        with contextlib.suppress(Exception):  # the DB is down: the process's own counters
            await metrics.refresh(tracking_db)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app


@contextlib.asynccontextmanager
async def serving_metrics(
    settings: Settings, tracking_db: AsyncEngine, healthy: Callable[[], bool]
) -> AsyncIterator[int | None]:
    """Serve ``/healthz`` and ``/metrics`` while the block runs; yields the port (None when
    ``DELETION_METRICS_PORT`` is unset). In development only on loopback."""
    if settings.metrics_port is None:
        yield None
        return
    host = "127.0.0.1" if settings.environment is Environment.development else "0.0.0.0"  # noqa: S104
    server = uvicorn.Server(
        uvicorn.Config(
            metrics_app(tracking_db, healthy),
            host=host,
            port=settings.metrics_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    # The process's own SIGTERM handling (the worker's graceful stop) stays in charge.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.01)
    if task.done():  # it could not listen (uvicorn logged why): stop the process
        task.result()
        raise SystemExit(f"cannot serve metrics on port {settings.metrics_port}")
    log.info("metrics_serving", port=settings.metrics_port)
    try:
        yield settings.metrics_port
    finally:
        server.should_exit = True
        await task
