"""HTTP request metrics: count and latency by method, route template and status.

Labelled by the route's template (``/v1/deletion-requests/{request_id}``), which FastAPI
leaves in the ASGI scope once it has routed the request, never by the path: paths carry
request ids, confirmation tokens and status-page codes. Requests that match no route are
``route="unmatched"``, so that a scan of random paths cannot grow the label set.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics


def route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    root = scope.get("app_root_path") or scope.get("root_path") or ""
    return f"{root}/*" if root else "unmatched"  # a mount (the docs assets) or nothing


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The labelled series, looked up once per label set (``labels()`` validates and
        # locks on every call); label sets are bounded (route templates, statuses).
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    def _record(self, method: str, route: str, status: int, seconds: float) -> None:
        counted = self._counted.get((method, route, status))
        if counted is None:
            counted = metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status))
            self._counted[(method, route, status)] = counted
        timed = self._timed.get((method, route))
        if timed is None:
            timed = metrics.HTTP_SECONDS.labels(method=method, route=route)
            self._timed[(method, route)] = timed
        counted.inc()
        timed.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer started is what the client sees

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self._record(scope["method"], route_label(scope), status, time.perf_counter() - started)
