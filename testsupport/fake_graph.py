"""A fake Meta Graph API: a real HTTP server on 127.0.0.1, for the Graph API purger's tests.

One ``ThreadingHTTPServer`` in a background thread serves both Graph hosts under path
prefixes: ``/fb`` stands for ``graph.facebook.com`` and ``/ig`` for
``graph.instagram.com``, so ``FakeGraph.facebook_url`` and ``FakeGraph.instagram_url``
are the two base URLs the purger is given. It answers like Meta (``shared/soundops/meta.md``):

- ``GET|DELETE /{version}/{object-id}/subscribed_apps``: a Page (with its Page token) or an
  Instagram user (Instagram host, with its user token) is subscribed until a DELETE
  succeeds; GET lists the app while subscribed, ``{"data": []}`` after.
- ``GET|DELETE /{version}/{user-id|me}/permissions``: granted until a DELETE; from then on
  the user's token, and on the Facebook host the Page tokens it issued, answer error 190.
- an unknown or invalid token answers 190 (HTTP 400, Meta's error shape); a valid token
  for another object answers a permanent 100, so that a purger that sends the wrong token
  fails loudly instead of passing as "already gone"; any other path (the app-wide
  ``/{app-id}/subscriptions`` included) answers 100 too. Every request is recorded first.

Failures are scripted per method and path pattern (``fnmatch`` on the full path, e.g.
``/fb/v25.0/*/subscribed_apps``): a queue of :class:`Reply` taken one per matching
request, after which the fake answers normally again. A reply is a Graph error, a raw
HTTP answer, a delay, or extra headers (usage) on the normal answer.

Use it as a context manager, or ``start()`` / ``close()``; closing wakes delayed replies
and joins every thread. A test should assert ``errors == []`` at the end (the
fixture does): a bug of the fake must not pass as a network failure.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import sys
import threading
import traceback
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

from testsupport.seed import World

Family = Literal["facebook", "instagram"]
PREFIXES: dict[str, Family] = {"fb": "facebook", "ig": "instagram"}
APP_ID = "fake-app"
SUBSCRIBED_FIELDS = ["messages", "comments", "mentions"]
PERMISSIONS = ["instagram_basic", "instagram_manage_messages", "pages_manage_metadata"]


@dataclass(frozen=True)
class GraphCall:
    """One request as the fake received it."""

    method: str
    family: Family | None  # None: a path outside /fb and /ig
    path: str  # after the host prefix, e.g. /v25.0/1784.../subscribed_apps
    token: str | None  # from ``Authorization: Bearer`` (or ``access_token=``)

    @property
    def edge(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Reply:
    """A scripted answer. ``proceed``: after ``delay``, answer as Meta normally would
    (state changes included), adding ``headers``."""

    status: int = 400
    code: int | None = None
    subcode: int | None = None
    is_transient: bool | None = None
    message: str = "(#1) An unknown error occurred"
    fbtrace_id: str | None = None
    body: str | None = None  # a raw body instead of Meta's error shape
    delay: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)
    proceed: bool = False


def graph_error(
    code: int,
    subcode: int | None = None,
    *,
    status: int = 400,
    is_transient: bool | None = None,
    message: str | None = None,
    fbtrace_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """An error in Meta's shape: ``{"error": {"message", "type", "code", ...}}``."""
    return Reply(
        status=status,
        code=code,
        subcode=subcode,
        is_transient=is_transient,
        message=message or f"(#{code}) scripted error",
        fbtrace_id=fbtrace_id,
        headers=headers or {},
    )


def http_error(status: int = 500, body: str = "<html>Internal Server Error</html>") -> Reply:
    """A bare HTTP error, not in Meta's error shape."""
    return Reply(status=status, body=body, headers={"Content-Type": "text/html"})


def slow(seconds: float) -> Reply:
    """The normal answer, ``seconds`` late."""
    return Reply(delay=seconds, proceed=True)


def usage(
    call_count: float = 0,
    total_time: float = 0,
    total_cputime: float = 0,
    *,
    business_id: str | None = None,
) -> Reply:
    """The normal answer with ``X-App-Usage`` (or, given a business id,
    ``X-Business-Use-Case-Usage``) carrying these percentages."""
    numbers = {"call_count": call_count, "total_time": total_time, "total_cputime": total_cputime}
    if business_id is None:
        headers = {"X-App-Usage": json.dumps(numbers)}
    else:
        entry = {"type": "pages", **numbers, "estimated_time_to_regain_access": 0}
        headers = {"X-Business-Use-Case-Usage": json.dumps({business_id: [entry]})}
    return Reply(headers=headers, proceed=True)


@dataclass(frozen=True)
class _Token:
    family: Family
    owner: str  # the user id (user token) or the Page id (Page token)
    user: str  # whose grant keeps the token valid
    page: bool = False


@dataclass
class _Script:
    method: str
    pattern: str
    replies: deque[Reply]


class FakeGraph:
    """The fake Graph API server and its state; thread-safe."""

    def __init__(self, version: str = "v25.0") -> None:
        self.version = version
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._calls: list[GraphCall] = []
        self._tokens: dict[str, _Token] = {}
        self._granted: set[tuple[Family, str]] = set()
        self._subscribed: set[tuple[Family, str]] = set()
        self._scripts: list[_Script] = []
        self._traces = itertools.count(1)
        self.errors: list[str] = []  # tracebacks of the fake's own failures
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> Self:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.graph = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-graph"
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # wakes delayed replies: they answer nothing
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()  # joins the request threads
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the fake Graph API is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def facebook_url(self) -> str:
        return f"{self.base_url}/fb"

    @property
    def instagram_url(self) -> str:
        return f"{self.base_url}/ig"

    # --- state ----------------------------------------------------------------------

    def grant_user(self, family: Family, user_id: str, token: str) -> None:
        """A person who granted the app permissions; ``token`` is their user token."""
        with self._lock:
            self._tokens[token] = _Token(family, user_id, user_id)
            self._granted.add((family, user_id))
            if family == "instagram":
                self._subscribed.add((family, user_id))

    def connect_page(self, page_id: str, token: str, *, user_id: str) -> None:
        """A Page subscribed to the app, with a Page token issued through ``user_id``."""
        with self._lock:
            self._tokens[token] = _Token("facebook", page_id, user_id, page=True)
            self._subscribed.add(("facebook", page_id))

    def add_world(self, world: World) -> None:
        """Every connected account of the seeded world, subscribed and granted."""
        for tenant in world.tenants.values():
            for account in tenant.accounts:
                if account.family == "facebook":
                    assert account.facebook_user_id is not None
                    self.grant_user("facebook", account.facebook_user_id, account.user_token)
                    if account.facebook_page_id and account.page_token:
                        self.connect_page(
                            account.facebook_page_id,
                            account.page_token,
                            user_id=account.facebook_user_id,
                        )
                else:
                    self.grant_user("instagram", account.ig_user_id, account.user_token)

    def subscribed(self, family: Family, object_id: str) -> bool:
        with self._lock:
            return (family, object_id) in self._subscribed

    def granted(self, family: Family, user_id: str) -> bool:
        with self._lock:
            return (family, user_id) in self._granted

    def script(self, method: str, pattern: str, *replies: Reply) -> None:
        """Answer the next requests of ``method`` whose full path matches ``pattern``."""
        with self._lock:
            self._scripts.append(_Script(method.upper(), pattern, deque(replies)))

    @property
    def calls(self) -> list[GraphCall]:
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # --- answering (request threads) ------------------------------------------------

    def _record(self, method: str, path: str, token: str | None) -> tuple[GraphCall, Reply | None]:
        prefix, _, rest = path.lstrip("/").partition("/")
        family = PREFIXES.get(prefix)
        call = GraphCall(method, family, f"/{rest}" if family else path, token)
        with self._lock:
            self._calls.append(call)
            for script in self._scripts:
                if (
                    script.replies
                    and script.method == method
                    and fnmatch.fnmatchcase(path, script.pattern)
                ):
                    return call, script.replies.popleft()
        return call, None

    def _error(self, reply: Reply) -> tuple[int, dict[str, Any]]:
        error: dict[str, Any] = {
            "message": reply.message,
            "type": "OAuthException",
            "code": reply.code,
            "fbtrace_id": reply.fbtrace_id or f"AFakeTrace{next(self._traces):06d}",
        }
        if reply.subcode is not None:
            error["error_subcode"] = reply.subcode
        if reply.is_transient is not None:
            error["is_transient"] = reply.is_transient
        return reply.status, {"error": error}

    def _invalid_token(self) -> tuple[int, dict[str, Any]]:
        return self._error(
            graph_error(190, message="Invalid OAuth access token - Cannot parse access token")
        )

    def _valid(self, token: str | None, family: Family) -> _Token | None:
        known = self._tokens.get(token or "")
        if known is None or known.family != family or (family, known.user) not in self._granted:
            return None
        return known

    def _answer(self, call: GraphCall) -> tuple[int, Any]:
        """Meta's normal answer to a recorded call (state changes included)."""
        parts = call.path.strip("/").split("/")
        if call.family is None or len(parts) != 3 or parts[0] != self.version:
            return self._error(graph_error(100, message="Unsupported request"))
        _, object_id, edge = parts
        if edge not in ("subscribed_apps", "permissions") or call.method not in ("GET", "DELETE"):
            return self._error(graph_error(100, message=f"Unsupported {call.method} request"))
        with self._lock:
            token = self._valid(call.token, call.family)
            if token is None:
                return self._invalid_token()
            if object_id == "me" and not token.page:
                object_id = token.owner
            page_edge = call.family == "facebook" and edge == "subscribed_apps"
            if token.owner != object_id or token.page != page_edge:
                return self._error(
                    graph_error(100, message="fake: this token is not for this object")
                )
            key = (call.family, object_id)
            if edge == "subscribed_apps":
                if call.method == "DELETE":
                    self._subscribed.discard(key)
                    return 200, {"success": True}
                apps = [{"id": APP_ID, "subscribed_fields": SUBSCRIBED_FIELDS}]
                return 200, {"data": apps if key in self._subscribed else []}
            if call.method == "DELETE":
                self._granted.discard(key)
                return 200, {"success": True}
            granted = [{"permission": p, "status": "granted"} for p in PERMISSIONS]
            return 200, {"data": granted}

    def _respond(self, handler: _Handler) -> None:
        url = urlsplit(handler.path)
        token = None
        authorization = handler.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            token = authorization.removeprefix("Bearer ").strip()
        else:
            token = parse_qs(url.query).get("access_token", [None])[0]
        call, reply = self._record(handler.command, url.path, token)
        headers: dict[str, str] = {}
        if reply is not None:
            if reply.delay and self._closing.wait(reply.delay):
                return  # shutting down: the client is long gone
            headers.update(reply.headers)
        if reply is None or reply.proceed:
            status, body = self._answer(call)
            raw = json.dumps(body).encode()
        elif reply.body is not None:
            status, raw = reply.status, reply.body.encode()
        else:
            status, body = self._error(reply)
            raw = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json; charset=UTF-8")
        try:
            handler.send_response(status, HTTPStatus(status).phrase)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(raw)))
            handler.end_headers()
            handler.wfile.write(raw)
        except OSError:
            pass  # the client gave up (timeout): nothing to answer


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every request thread
    block_on_close = True
    graph: FakeGraph

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up is not an error of the fake; anything else is kept for
        the test to fail on (``FakeGraph.errors``)."""
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            self.graph.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers at close

    def _handle(self) -> None:
        self.server.graph._respond(self)

    do_GET = do_DELETE = do_POST = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read the recorded calls instead."""
