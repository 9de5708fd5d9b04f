"""Structured logs: JSON in production, readable in development."""

from __future__ import annotations

import logging
import re
import sys
import uuid

import structlog

from app.settings import Environment, Settings


class _StderrLogger:
    """Writes each line to whatever ``sys.stderr`` is at the time (not at configuration)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg

    @classmethod
    def factory(cls, *_args: object) -> _StderrLogger:
        return cls()


# Public paths whose last segment is a secret: a confirmation link's token, a status code.
_SECRET_PATH = re.compile(r"(/deletion-(?:confirm|status)/)[^\s?#\"]+")
# Query parameters that carry personal data: `subject=owner_email=...` of the list.
_PERSONAL_QUERY = re.compile(r"([?&]subject=)[^&\s#\"]*", re.IGNORECASE)


def mask_secret_paths(text: str) -> str:
    return _PERSONAL_QUERY.sub(r"\1***", _SECRET_PATH.sub(r"\1***", text))


class SecretPathFilter(logging.Filter):
    """Masks link tokens, status codes and subjects in access-log lines (uvicorn logs
    every path with its query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_secret_paths(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                mask_secret_paths(a) if isinstance(a, str) else a for a in record.args
            )
        return True


def _mask_access_logs() -> None:
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, SecretPathFilter) for f in logger.filters):
            logger.addFilter(SecretPathFilter())


def configure_logging(settings: Settings) -> None:
    _mask_access_logs()
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if settings.environment is Environment.development
        else structlog.processors.JSONRenderer()
    )
    # httpx logs every request URL at INFO; Graph API URLs carry Page and user ids.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=_StderrLogger.factory,
        cache_logger_on_first_use=False,
    )


_CORRELATION = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def correlation_id(header: str | None) -> str:
    """The caller's X-Request-ID when it is a plain token, else a new one (never echo junk)."""
    if header and _CORRELATION.match(header):
        return header
    return uuid.uuid4().hex
