"""Structured logs: JSON in production, readable in development."""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
import uuid
from datetime import UTC, datetime

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
    # Every access-log line passes here: the regular expressions run only on text that
    # can match them (a secret path's prefix; a query's "=").
    if "/deletion-confirm/" in text or "/deletion-status/" in text:
        text = _SECRET_PATH.sub(r"\1***", text)
    if "=" in text:
        text = _PERSONAL_QUERY.sub(r"\1***", text)
    return text


class SecretPathFilter(logging.Filter):
    """Masks link tokens, status codes and subjects in access-log lines (uvicorn logs
    every path with its query), and the client's address: an IP address is personal data,
    and the people who open the status page are the data subjects."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_secret_paths(record.msg)
        if isinstance(record.args, tuple):
            args = [mask_secret_paths(a) if isinstance(a, str) else a for a in record.args]
            if record.name == "uvicorn.access" and len(args) == 5:
                args[0] = "-"  # (client_addr, method, full_path, http_version, status_code)
            record.args = tuple(args)
        return True


def exception_without_values(
    _logger: object, _name: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """An exception in a log line as its type and where it was raised (file, line and
    function of each frame), never its message or locals: an exception's text can hold
    what the code was handling (an address, a name), and the rendered tuple did."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        event_dict.setdefault("error_type", exc_info[0].__name__)
        event_dict["frames"] = [
            f"{frame.filename}:{frame.lineno} {frame.name}"
            for frame in traceback.extract_tb(exc_info[2])
        ]
    return event_dict


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler on whatever ``sys.stderr`` is when a record is written."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _LineFormatter(structlog.stdlib.ProcessorFormatter):
    """The standard library's records as our lines. With the JSON renderer, a record
    without exception or stack information (every access-log line) is written directly
    as the chain below would write it (event, level, logger, timestamp), without copying
    the record and running the chain: a quarter of the access log's cost per request."""

    def __init__(self, renderer: structlog.types.Processor) -> None:
        super().__init__(
            foreign_pre_chain=[
                exception_without_values,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
        self._direct = isinstance(renderer, structlog.processors.JSONRenderer)

    def format(self, record: logging.LogRecord) -> str:
        if not self._direct or record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        return json.dumps(
            {
                "event": record.getMessage(),
                "level": record.levelname.lower(),
                "logger": record.name,
                "timestamp": datetime.now(tz=UTC).isoformat().replace("+00:00", "Z"),
            }
        )


def _mask_access_logs() -> None:
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, SecretPathFilter) for f in logger.filters):
            logger.addFilter(SecretPathFilter())


def _route_stdlib_logs(renderer: structlog.types.Processor, level: int) -> None:
    """Lines of the standard library's loggers (uvicorn's server and access logs, Alembic)
    go through the same renderer as ours: one JSON object per line in production."""
    handler = _CurrentStderr()
    handler.setFormatter(_LineFormatter(renderer))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CurrentStderr)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Other libraries' INFO lines stay off (as before: the root had no handler): some name
    # what they handle (an SMTP server logs recipients). Their warnings and errors pass.
    root.setLevel(max(level, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()  # uvicorn's own plain-text handlers, if it installed them
        logger.propagate = True
        logger.setLevel(level)


def configure_logging(settings: Settings) -> None:
    """Our logs and the standard library's (uvicorn) at ``DELETION_LOG_LEVEL``: JSON lines
    outside development, readable lines in development."""
    _mask_access_logs()
    level = logging.getLevelNamesMapping()[settings.log_level.value.upper()]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if settings.environment is Environment.development
        else structlog.processors.JSONRenderer()
    )
    _route_stdlib_logs(renderer, level)
    # httpx logs every request URL at INFO; Graph API URLs carry Page and user ids.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    logging.getLogger("httpcore").setLevel(max(level, logging.WARNING))
    # Alembic narrates every start on SQLite ("Context impl ..."); `migrate` says what it did.
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            exception_without_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_StderrLogger.factory,
        cache_logger_on_first_use=False,
    )


_CORRELATION = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def correlation_id(header: str | None) -> str:
    """The caller's X-Request-ID when it is a plain token, else a new one (never echo junk)."""
    if header and _CORRELATION.match(header):
        return header
    return uuid.uuid4().hex
