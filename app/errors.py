"""The domain's exception base: a :class:`ProblemError` carries the HTTP status, slug and
title it is answered with, so that services say what went wrong without knowing HTTP.

The FastAPI handlers that render them as RFC 9457 problem documents are in
:mod:`app.http_errors`; this module imports no web framework.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any


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


# Message types that quote the schema (a pattern, the allowed values), never the input.
_SCHEMA_QUOTING = frozenset({"string_pattern_mismatch", "literal_error", "enum"})


def _safe_message(error_type: str, message: str) -> str:
    # Other messages may quote parts of the input ("found `x` at 0", "'<'"): keep the lead.
    if error_type not in _SCHEMA_QUOTING and any(q in message for q in ("`", "'", '"')):
        return message.split(":", 1)[0]
    return message


_QUOTED = re.compile(r"'([^']*)'")


def _union_tag(error: Mapping[str, Any], loc: list[str]) -> tuple[list[str], str]:
    """A discriminated union's bad or missing tag (``kind``): name the field and the values
    it allows (from the schema), never the value that was sent."""
    ctx = error.get("ctx") or {}
    field = "".join(_QUOTED.findall(str(ctx.get("discriminator", "")))) or "kind"
    allowed = ", ".join(f"'{tag}'" for tag in _QUOTED.findall(str(ctx.get("expected_tags", ""))))
    if error.get("type") == "union_tag_not_found":
        msg = f"Field required: {field}" + (f" (one of {allowed})" if allowed else "")
    else:
        msg = f"{field} must be one of {allowed}" if allowed else f"{field} is not allowed"
    return [*loc, field], msg


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors without their ``input`` and ``ctx`` values: those may be personal data."""
    cleaned = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        error_type = str(error.get("type"))
        if error_type in ("union_tag_invalid", "union_tag_not_found"):
            loc, msg = _union_tag(error, loc)
        else:
            msg = _safe_message(error_type, str(error.get("msg", "")))
        cleaned.append({"loc": loc, "msg": msg, "type": error.get("type")})
    return cleaned
