"""Meta's ``signed_request``: ``base64url(signature) "." base64url(payload)``, HMAC-SHA256.

Verified exactly as ``meta.md`` says: the HMAC is over the payload segment as
received, keyed with the app secret of the login family that received the
callback; 32-byte signature compared in constant time; ``algorithm`` must be
HMAC-SHA256; ``user_id`` must be present. Each rejection names its reason
class, never the secret or the payload.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from app.errors import BadRequest

MAX_LENGTH = 4096  # real ones are a few hundred characters


class InvalidSignedRequest(BadRequest):
    slug = "invalid-signed-request"
    title = "Invalid signed_request"


@dataclass(frozen=True)
class SignedRequest:
    user_id: str
    issued_at: int | None
    payload: dict[str, Any]


def _b64url(segment: str) -> bytes:
    stripped = segment.rstrip("=")
    if not stripped:
        raise InvalidSignedRequest("signed_request has an empty segment")
    standard = stripped.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSignedRequest("signed_request is not valid base64url") from exc


def verify(value: str | None, secret: bytes) -> SignedRequest:
    if not value:
        raise InvalidSignedRequest("the form field signed_request is missing")
    if len(value) > MAX_LENGTH:
        raise InvalidSignedRequest("signed_request is too large")
    parts = value.split(".")
    if len(parts) != 2:
        raise InvalidSignedRequest("signed_request must have exactly two segments")
    encoded_signature, encoded_payload = parts
    if not encoded_payload.isascii():
        raise InvalidSignedRequest("signed_request is not valid base64url")
    signature = _b64url(encoded_signature)
    payload_bytes = _b64url(encoded_payload)
    if len(signature) != 32:
        raise InvalidSignedRequest("signed_request signature has the wrong length")
    expected = hmac.new(secret, encoded_payload.encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise InvalidSignedRequest("signed_request signature does not match")
    try:
        payload = json.loads(payload_bytes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSignedRequest("signed_request payload is not JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidSignedRequest("signed_request payload is not a JSON object")
    algorithm = payload.get("algorithm")
    if not isinstance(algorithm, str) or algorithm.upper() != "HMAC-SHA256":
        raise InvalidSignedRequest("signed_request algorithm is not HMAC-SHA256")
    user_id = payload.get("user_id")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidSignedRequest("signed_request has no user_id")
    issued_at = payload.get("issued_at")
    return SignedRequest(
        user_id=user_id.strip(),
        issued_at=issued_at
        if isinstance(issued_at, int) and not isinstance(issued_at, bool)
        else None,
        payload=payload,
    )


def sign(payload: dict[str, Any], secret: bytes, *, padding: bool = False) -> str:
    """Make a signed_request as Meta does (for tests and local tools)."""

    def encode(data: bytes) -> str:
        text = base64.urlsafe_b64encode(data).decode()
        return text if padding else text.rstrip("=")

    encoded_payload = encode(json.dumps(payload).encode())
    signature = hmac.new(secret, encoded_payload.encode(), hashlib.sha256).digest()
    return f"{encode(signature)}.{encoded_payload}"
