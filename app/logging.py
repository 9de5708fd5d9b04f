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


def configure_logging(settings: Settings) -> None:
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
