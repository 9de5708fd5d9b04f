"""What a retention check reports: statuses, items, and a store's errors as a status."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from app.retention_status import RetentionMode, RetentionStatus, RetentionStore

DAY_SECONDS = 86_400
RETENTION_DAYS = 30
STORE_TIMEOUT_SECONDS = 10.0
# What a server answers for something it does not implement.
UNSUPPORTED_MONGO_CODES = {
    238: "NotImplemented",
    115: "CommandNotSupported",
    59: "CommandNotFound",
}
UNSUPPORTED_S3_CODES = frozenset({"NotImplemented", "NotSupported"})
TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling"}
)

T = TypeVar("T")


# Statuses that make a report fail (CLI exit code 1). ``unsupported`` and
# ``not_configured`` are reported clearly but are facts about the deployment, not faults.
FAILING = frozenset(
    {
        RetentionStatus.missing,
        RetentionStatus.wrong,
        RetentionStatus.unreachable,
        RetentionStatus.error,
    }
)
# What ``apply`` tries to change.
ACTIONABLE = frozenset(
    {RetentionStatus.missing, RetentionStatus.wrong, RetentionStatus.unsupported}
)


@dataclass(frozen=True)
class RetentionItem:
    store: RetentionStore
    name: str
    expected: str
    status: RetentionStatus
    found: str | None = None
    detail: str | None = None
    action: str | None = None  # what ``apply`` did or tried
    # Who enforces this location's retention, and why (see ``modes``).
    mode: RetentionMode | None = None
    mode_reason: str | None = None


@dataclass(frozen=True)
class RetentionReport:
    items: list[RetentionItem]

    @property
    def ok(self) -> bool:
        """No item is missing, wrong, unreachable or in error."""
        return not any(item.status in FAILING for item in self.items)

    @property
    def checked(self) -> bool:
        """At least one rule was looked at: a report of stores that are all unconfigured
        proves nothing, and the CLI fails on it rather than pass."""
        return any(item.status is not RetentionStatus.not_configured for item in self.items)


# --- store errors -----------------------------------------------------------------------


def mongo_unsupported(exc: OperationFailure) -> str:
    details = exc.details or {}
    message = str(details.get("errmsg") or "not implemented")
    name = details.get("codeName") or UNSUPPORTED_MONGO_CODES.get(exc.code or 0, "")
    return f"unsupported by this server: {message} (code {exc.code} {name})".rstrip()


def store_failure(exc: BaseException) -> tuple[RetentionStatus, str] | None:
    """Status and detail for a store's error; None when it is not a store's error."""
    if isinstance(exc, OperationFailure):
        if exc.code in UNSUPPORTED_MONGO_CODES:
            return RetentionStatus.unsupported, mongo_unsupported(exc)
        name = (exc.details or {}).get("codeName") or "error"
        return RetentionStatus.error, f"OperationFailure code {exc.code} ({name})"
    if isinstance(exc, ConnectionFailure):
        return RetentionStatus.unreachable, type(exc).__name__
    if isinstance(exc, PyMongoError):
        return RetentionStatus.error, type(exc).__name__
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in UNSUPPORTED_S3_CODES or status == 501:
            return (
                RetentionStatus.unsupported,
                f"unsupported by this server: {code} (HTTP {status})",
            )
        if code in TRANSIENT_S3_CODES or status >= 500:
            return RetentionStatus.unreachable, code
        return RetentionStatus.error, f"{code} (HTTP {status})"
    if isinstance(exc, HTTPClientError | BotoConnectionError | aiohttp.ClientError | OSError):
        return RetentionStatus.unreachable, type(exc).__name__  # includes TimeoutError
    if isinstance(exc, BotoCoreError):
        return RetentionStatus.error, type(exc).__name__
    return None


@dataclass(frozen=True)
class StoreFailure:
    """A store's error, as a status and a detail that is safe to show."""

    status: RetentionStatus
    detail: str


async def attempt(work: Callable[[], Awaitable[T]]) -> T | StoreFailure:
    """``work()`` within the store timeout; a store's error becomes a StoreFailure."""
    try:
        async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
            return await work()
    except Exception as exc:
        failure = store_failure(exc)
        if failure is None:
            raise
        return StoreFailure(*failure)
