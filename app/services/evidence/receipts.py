"""Signed receipts: what a request deleted and retained, provable later, without personal data.

Signed with **Ed25519** rather than an HMAC: anyone holding the public key (an
auditor, the main backend, a court) can check a receipt, and nobody but the
service can make one. ``DELETION_RECEIPT_SIGNING_KEY`` is the private key's
32-byte seed, base64. The signature covers the ``receipt`` object serialised by
**RFC 8785** (the JSON Canonicalization Scheme, through the ``rfc8785`` package), which
any language can reproduce; the envelope names it (``signature.canonicalization``).
Receipts stored before that have no such field: they were signed over ``json.dumps``
with sorted keys and no spaces, and :func:`verify` still checks them that way.

A receipt states the **backup horizon** (:func:`backup_horizon`): the date by which
backup copies of what was deleted expire, ``completed_at`` +
``DELETION_BACKUP_RETENTION_DAYS``; unset, it says that backups are outside this service.

A receipt is made once its facts are final and stored on the request (:func:`issue`):
when the request settles to ``completed`` or ``failed``, and again when it is minimised
(its ``subject_minimised`` turns true). ``GET .../receipt`` returns the stored one as it
was issued; only a request that has none stored (cancelled and not yet minimised, or
finished before receipts were stored) gets one made for the answer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncSession

from app import repository
from app.models import DeletionRequest, DeletionTask, utcnow
from app.purgers.base import third_party_counts
from app.services.claims import SKIP_TEXT, store_claim
from app.settings import DEV_RECEIPT_SEED, Settings

ALGORITHM = "Ed25519"
CANONICALIZATION = "RFC8785"
BACKUPS_OUTSIDE = (
    "Backups of SoundOps' stores are outside this service: it states no date by which "
    "backup copies expire."
)


@dataclass(frozen=True)
class BackupHorizon:
    """By when backup copies of what a request deleted are gone, as far as this service
    can say: ``expire_by`` is ``completed_at`` + the retention, once the request completed."""

    retention_days: int | None
    expire_by: datetime | None
    statement: str


def backup_horizon(completed_at: datetime | None, retention_days: int | None) -> BackupHorizon:
    if retention_days is None:
        return BackupHorizon(None, None, BACKUPS_OUTSIDE)
    if completed_at is None:
        return BackupHorizon(
            retention_days,
            None,
            f"Backup copies expire {retention_days} days after the deletion completes.",
        )
    expire_by = completed_at + timedelta(days=retention_days)
    return BackupHorizon(
        retention_days,
        expire_by,
        f"Backup copies of the deleted data expire by {expire_by:%d %B %Y, %H:%M} UTC.",
    )


def private_key(settings: Settings) -> Ed25519PrivateKey:
    if settings.receipt_signing_key is None:
        seed = settings.development_only(DEV_RECEIPT_SEED, "DELETION_RECEIPT_SIGNING_KEY")
        return Ed25519PrivateKey.from_private_bytes(seed)
    try:
        seed = base64.b64decode(settings.receipt_signing_key.get_secret_value(), validate=True)
        return Ed25519PrivateKey.from_private_bytes(seed)
    except ValueError as exc:
        raise ValueError("DELETION_RECEIPT_SIGNING_KEY is not base64 of 32 bytes") from exc


def public_key_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def key_id(public_b64: str) -> str:
    return hashlib.sha256(public_b64.encode()).hexdigest()[:16]


def canonical(data: Any) -> bytes:
    """RFC 8785 bytes of ``data``: what a receipt's signature covers."""
    return rfc8785.dumps(data)


def _legacy_canonical(data: Any) -> bytes:
    """How receipts were serialised for signing before RFC 8785 (no ``canonicalization``)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class Facts:
    """The columns of a request that its receipt states."""

    id: uuid.UUID
    kind: str
    status: str
    source: str
    created_at: datetime
    due_at: datetime
    completed_at: datetime | None
    datamap_version: str | None
    minimised_at: datetime | None

    @classmethod
    def of(cls, request: DeletionRequest, changes: Mapping[str, Any] | None = None) -> Facts:
        """The request's facts once ``changes`` (its columns about to be written) are
        made: a receipt issued in the statement that settles it, without reading it back."""
        values = {name: getattr(request, name) for name in cls.__dataclass_fields__}
        values.update((name, value) for name, value in (changes or {}).items() if name in values)
        for name in ("kind", "status", "source"):
            value = values[name]
            values[name] = value.value if isinstance(value, StrEnum) else value
        return cls(**values)


def build(
    request: DeletionRequest | Facts,
    tasks: list[DeletionTask],
    backup_retention_days: int | None,
) -> dict[str, Any]:
    horizon = backup_horizon(request.completed_at, backup_retention_days)

    def store(task: DeletionTask) -> dict[str, Any]:
        claim = store_claim(task)
        entry = {
            "store": task.purger,
            "status": task.status,
            "verified": claim.verified,
            "deleted": dict(task.deleted),
            "retained": dict(task.retained),
            "skipped_reason": SKIP_TEXT[claim.skipped] if claim.skipped else None,
        }
        # Added only where there is some: receipts without third-party data keep their form.
        if written := third_party_counts(task.deleted):
            entry["as_third_party"] = written
        return entry

    return {
        "version": 1,
        "request_id": str(request.id),
        "kind": request.kind,
        "status": request.status,
        "source": request.source,
        "created_at": _iso(request.created_at),
        "due_at": _iso(request.due_at),
        "completed_at": _iso(request.completed_at),
        "data_map_version": request.datamap_version,
        "subject_minimised": request.minimised_at is not None,
        "stores": [store(task) for task in tasks],
        "backups": {
            "retention_days": horizon.retention_days,
            "expire_by": _iso(horizon.expire_by),
            "statement": horizon.statement,
        },
        "issued_at": utcnow().isoformat(),
    }


def sign(receipt: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    public = public_key_b64(key.public_key())
    signature = key.sign(canonical(receipt))
    return {
        "receipt": receipt,
        "signature": {
            "algorithm": ALGORITHM,
            "canonicalization": CANONICALIZATION,
            "key_id": key_id(public),
            "public_key": public,
            "value": base64.b64encode(signature).decode(),
        },
    }


def make(
    request: DeletionRequest | Facts,
    tasks: list[DeletionTask],
    key: Ed25519PrivateKey,
    backup_retention_days: int | None,
) -> dict[str, Any]:
    """The request's signed receipt, of these facts and tasks."""
    return sign(build(request, tasks, backup_retention_days), key)


async def issue(
    session: AsyncSession,
    request_id: uuid.UUID,
    key: Ed25519PrivateKey,
    backup_retention_days: int | None,
) -> dict[str, Any]:
    """Make the request's signed receipt from what ``session`` sees now (the transaction
    that settles or minimises it), and store it on the request."""
    request = await repository.get_request_fresh(session, request_id)
    assert request is not None
    tasks = list(await repository.get_tasks(session, request_id))
    document = make(request, tasks, key, backup_retention_days)
    await repository.set_values(session, request_id, receipt=document)
    return document


def verify(document: dict[str, Any], trusted_public_key_b64: str) -> bool:
    """True when the receipt is unchanged and signed by the trusted key (not the embedded one).

    Over RFC 8785 bytes when the envelope says so; an envelope without ``canonicalization``
    (stored before RFC 8785) over the sorted ``json.dumps`` it was signed over then."""
    try:
        signature = document["signature"]
        if signature.get("algorithm") != ALGORITHM:
            return False
        method = signature.get("canonicalization")
        if method == CANONICALIZATION:
            signed = canonical(document["receipt"])
        elif method is None:
            signed = _legacy_canonical(document["receipt"])
        else:
            return False
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(trusted_public_key_b64))
        public.verify(base64.b64decode(signature["value"]), signed)
    except (InvalidSignature, KeyError, TypeError, ValueError, rfc8785.CanonicalizationError):
        return False
    return True
