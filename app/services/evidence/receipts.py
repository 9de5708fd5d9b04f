"""Signed receipts: what a request deleted and retained, provable later, without personal data.

Signed with **Ed25519** rather than an HMAC: anyone holding the public key (an
auditor, the main backend, a court) can check a receipt, and nobody but the
service can make one. ``DELETION_RECEIPT_SIGNING_KEY`` is the private key's
32-byte seed, base64. The signature covers the ``receipt`` object serialised
canonically (sorted keys, no spaces, UTF-8).

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
from typing import Any

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
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def build(request: DeletionRequest, tasks: list[DeletionTask]) -> dict[str, Any]:
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
        "issued_at": utcnow().isoformat(),
    }


def sign(receipt: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    public = public_key_b64(key.public_key())
    signature = key.sign(canonical(receipt))
    return {
        "receipt": receipt,
        "signature": {
            "algorithm": ALGORITHM,
            "key_id": key_id(public),
            "public_key": public,
            "value": base64.b64encode(signature).decode(),
        },
    }


async def issue(
    session: AsyncSession, request_id: uuid.UUID, key: Ed25519PrivateKey
) -> dict[str, Any]:
    """Make the request's signed receipt from what ``session`` sees now (the transaction
    that settles or minimises it), and store it on the request."""
    request = await repository.get_request_fresh(session, request_id)
    assert request is not None
    tasks = list(await repository.get_tasks(session, request_id))
    document = sign(build(request, tasks), key)
    await repository.set_values(session, request_id, receipt=document)
    return document


def verify(document: dict[str, Any], trusted_public_key_b64: str) -> bool:
    """True when the receipt is unchanged and signed by the trusted key (not the embedded one)."""
    try:
        signature = document["signature"]
        if signature.get("algorithm") != ALGORITHM:
            return False
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(trusted_public_key_b64))
        public.verify(base64.b64decode(signature["value"]), canonical(document["receipt"]))
    except (InvalidSignature, KeyError, TypeError, ValueError):
        return False
    return True
