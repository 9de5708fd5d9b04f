"""What a retention check reports about one automatic-retention rule of the SoundOps
contract: a domain type shared by the check (``app.services.evidence.retention``), the API's
bodies and the CLI."""

from __future__ import annotations

from enum import StrEnum


class RetentionStatus(StrEnum):
    """What a retention check found for one rule: `ok`, `missing`, `wrong` (present with
    other settings), `unsupported` (the server cannot have it), `not_configured` (the
    store is not configured), `unreachable` or `error`."""

    ok = "ok"
    missing = "missing"
    wrong = "wrong"
    unsupported = "unsupported"
    not_configured = "not_configured"
    unreachable = "unreachable"
    error = "error"


class RetentionStore(StrEnum):
    """The store a retention rule lives in."""

    mongodb = "mongodb"
    s3 = "s3"


class RetentionMode(StrEnum):
    """Who enforces a location's retention: the store itself (``ttl``, ``lifecycle``), the
    worker (``sweep``), or nobody right now (``none``: not configured, or not answering)."""

    ttl = "ttl"
    lifecycle = "lifecycle"
    sweep = "sweep"
    none = "none"
