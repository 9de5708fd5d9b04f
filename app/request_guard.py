"""What every HTTP request must be before a router sees it (contract, "Requests").

- **A body of at most 64 KiB** (``MAX_BODY_BYTES``), also when it comes chunked without a
  ``Content-Length``: else ``413``, before the rest is read. Paths that take other
  bodies (a raw e-mail: 1 MiB; Meta's signed_request forms: 8 KiB, a 400) enforce their
  own limit while streaming, and are passed through unread.
- **No string that PostgreSQL cannot store**: a NUL (``text`` and ``jsonb`` refuse
  U+0000) or a lone surrogate (no UTF-8 encoding), in the path, a query parameter, or any
  key or value of a JSON body: else a ``422`` validation problem naming where, and
  nothing is changed. Checked here once for every route, so that no field can be
  forgotten, and never later as a driver error (a 500).
- **A body declared JSON is JSON that can be read**: one that is not even text (bytes
  that are no UTF-8), nests deeper than the decoder goes, or holds a number too long to
  convert is a ``422`` too (FastAPI answers those with an undocumented ``400``); other
  syntax errors FastAPI answers itself, with the position.

A plain ASGI middleware: it buffers the (bounded) body and hands it on unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, Unprocessable
from app.http_errors import problem_response

MAX_BODY_BYTES = 64 * 1024
UNSTORABLE_MESSAGE = "String holds a character that cannot be stored (NUL or a lone surrogate)"
UNSTORABLE_TYPE = "string_unstorable"
UNSTORABLE_DETAIL = "The request holds a character that cannot be stored; see errors."
UNREADABLE_JSON = {
    "loc": ["body"],
    "msg": "The body cannot be read as JSON (not UTF-8, nested too deep, or a number too long)",
    "type": "json_invalid",
}
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def storable(text: str) -> bool:
    """True when PostgreSQL can store ``text`` (in ``text`` as in ``jsonb``)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from "\ud800" in JSON
        return False
    return True


def _name(key: str) -> str:
    """A location part: the key itself when it is a plain name (never echo junk)."""
    return key if _PLAIN_NAME.match(key) else "*"


def unstorable_in_json(value: Any) -> Iterator[list[str | int]]:
    """Locations of the unstorable strings (keys and values) in a decoded JSON document."""
    stack: list[tuple[list[str | int], Any]] = [([], value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, str):
            if not storable(item):
                yield loc
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not storable(key):
                    yield [*loc, _name(key)]
                stack.append(([*loc, _name(key)], sub))
        elif isinstance(item, list):
            stack.extend(([*loc, index], sub) for index, sub in enumerate(item))


def _declares_json(content_type: str) -> bool:
    """application/json or application/*+json, as FastAPI reads a body as JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class _TooLarge(Exception):
    pass


class RequestGuardMiddleware:
    """See the module docstring. ``own_limit_paths``: paths whose routers take larger
    bodies and bound them themselves (their bodies are passed through unread)."""

    def __init__(self, app: ASGIApp, own_limit_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.own_limit_paths = frozenset(own_limit_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        errors = self._url_errors(scope)
        if errors:
            await self._unprocessable(errors, scope, receive, send)
            return
        if scope["path"] in self.own_limit_paths:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await self._too_large(scope, receive, send)
            return
        try:
            body, final = await self._read_body(receive)
        except _TooLarge:
            await self._too_large(scope, receive, send)
            return
        # Without a Content-Type, FastAPI reads JSON unless strict_content_type (its default
        # since 0.130): check such a body's strings, if it is JSON at all.
        content_type = headers.get("content-type", "")
        if body and (not content_type or _declares_json(content_type)):
            errors = self._json_errors(body, declared=bool(content_type))
            if errors:
                await self._unprocessable(errors, scope, receive, send)
                return
        await self.app(scope, _replay(body, final, receive), send)

    @staticmethod
    def _url_errors(scope: Scope) -> list[dict[str, Any]]:
        locs: list[list[str | int]] = []
        if not storable(scope["path"]):
            locs.append(["path"])
        for key, value in QueryParams(scope.get("query_string", b"")).multi_items():
            if not storable(key) or not storable(value):
                locs.append(["query", _name(key)])
        return [_error(loc) for loc in locs]

    @staticmethod
    async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
        """The whole body (at most MAX_BODY_BYTES), and the message that ended it when it
        was not a body message (a disconnect): the app must see that too."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return bytes(body), message
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                raise _TooLarge
            if not message.get("more_body", False):
                return bytes(body), None

    @staticmethod
    def _json_errors(body: bytes, *, declared: bool) -> list[dict[str, Any]]:
        if _plainly_storable(body):
            return []
        try:
            document = json.loads(body)
        except json.JSONDecodeError:  # FastAPI answers it: 422 with the position
            return []
        except Exception:  # UnicodeDecodeError, RecursionError, ValueError (digits)
            return [UNREADABLE_JSON] if declared else []
        return [_error(["body", *loc]) for loc in unstorable_in_json(document)]

    async def _unprocessable(
        self, errors: list[dict[str, Any]], scope: Scope, receive: Receive, send: Send
    ) -> None:
        response = problem_response(
            Unprocessable.status,
            Unprocessable.title,
            UNSTORABLE_DETAIL,
            slug=Unprocessable.slug,
            extra={"errors": errors},
        )
        await response(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            PayloadTooLarge.status,
            PayloadTooLarge.title,
            f"A request body may be at most {MAX_BODY_BYTES} bytes.",
            slug=PayloadTooLarge.slug,
            headers={"Connection": "close"},  # the rest of the body is not read
        )
        await response(scope, receive, send)


def _plainly_storable(body: bytes) -> bool:
    """True when decoding ``body`` can find nothing to refuse (the usual small body, not
    decoded here once more): ASCII without NUL is UTF-8 and no string in it can hold a
    NUL or a lone surrogate but through a ``\\u`` escape (raw control characters are a
    syntax error); fewer than 4,300 bytes hold no number too long to convert; fewer than
    100 brackets nest no deeper than the decoder goes."""
    return (
        len(body) < 4300
        and body.isascii()
        and b"\x00" not in body
        and b"\\u" not in body
        and body.count(b"[") + body.count(b"{") < 100
    )


def _error(loc: list[str | int]) -> dict[str, Any]:
    return {"loc": [str(part) for part in loc], "msg": UNSTORABLE_MESSAGE, "type": UNSTORABLE_TYPE}


def _replay(body: bytes, final: Message | None, receive: Receive) -> Receive:
    """A receive that hands the buffered body on in one message, then the original."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    if final is not None:
        pending = [{"type": "http.request", "body": body, "more_body": True}, final]

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
