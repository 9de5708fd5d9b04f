"""Meta's ``signed_request``: ``base64url(signature) "." base64url(payload)``, HMAC-SHA256.

Verified exactly as ``meta.md`` says: the HMAC is over the payload segment as
received, keyed with the app secret of the login family that received the
callback; 32-byte signature compared in constant time; ``algorithm`` must be
HMAC-SHA256; ``user_id`` must be present. Each rejection names its reason
class, never the secret or the payload.

Replays: both segments must be canonical base64url (the URL-safe alphabet only;
padding tolerated when it is exactly right; the spare bits of the last character
zero), so that one signature has one spelling, and callers key replays on the
decoded signature (``SignedRequest.signature``). ``issued_at`` must be an integer no
older than ``max_age`` seconds (when ``max_age`` is not 0) and at most
``FUTURE_SKEW`` seconds ahead: an old callback captured once cannot be played again
after its request was minimised.

Anything that is not a valid signed_request raises ``InvalidSignedRequest`` and
nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from app.errors import BadRequest

MAX_LENGTH = 4096  # real ones are a few hundred characters
FUTURE_SKEW = 300  # seconds an issued_at may be ahead of this server's clock
_B64URL = re.compile(r"[A-Za-z0-9_-]+(=*)")


class InvalidSignedRequest(BadRequest):
    slug = "invalid-signed-request"
    title = "Invalid signed_request"


@dataclass(frozen=True)
class SignedRequest:
    user_id: str
    issued_at: int | None
    payload: dict[str, Any]
    # The decoded HMAC: what a replay is known by, however the request was spelled.
    signature: bytes = b""


def _b64url(segment: str) -> bytes:
    """Decode canonical base64url: refuses any other alphabet, wrong padding, and spare
    bits that are not zero (each of which would give one value several spellings)."""
    if not segment:
        raise InvalidSignedRequest("signed_request has an empty segment")
    match = _B64URL.fullmatch(segment)
    if match is None:
        raise InvalidSignedRequest("signed_request is not valid base64url")
    stripped = segment[: len(segment) - len(match.group(1))]
    if match.group(1) and len(match.group(1)) != -len(stripped) % 4:
        raise InvalidSignedRequest("signed_request is not valid base64url")
    try:
        decoded = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidSignedRequest("signed_request is not valid base64url") from exc
    if base64.urlsafe_b64encode(decoded).decode("ascii").rstrip("=") != stripped:
        raise InvalidSignedRequest("signed_request is not canonical base64url")
    return decoded


def _issued_at(payload: dict[str, Any], max_age: int, now: float) -> int | None:
    issued_at = payload.get("issued_at")
    if issued_at is None and max_age == 0:
        return None
    if not isinstance(issued_at, int) or isinstance(issued_at, bool) or issued_at < 0:
        raise InvalidSignedRequest("signed_request has no valid issued_at")
    if issued_at > now + FUTURE_SKEW:
        raise InvalidSignedRequest("signed_request was issued in the future")
    if max_age and issued_at < now - max_age:
        raise InvalidSignedRequest("signed_request is too old")
    return issued_at


def verify(
    value: str | None, secret: bytes, *, max_age: int = 0, now: float | None = None
) -> SignedRequest:
    """The verified signed_request, or ``InvalidSignedRequest``.

    ``max_age``: the oldest ``issued_at`` accepted, in seconds before ``now`` (default:
    this server's clock); 0 accepts any age (and a missing ``issued_at``).
    """
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
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
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
    return SignedRequest(
        user_id=user_id.strip(),
        issued_at=_issued_at(payload, max_age, time.time() if now is None else now),
        payload=payload,
        signature=signature,
    )


def sign(payload: dict[str, Any], secret: bytes, *, padding: bool = False) -> str:
    """Make a signed_request as Meta does (for tests and local tools)."""

    def encode(data: bytes) -> str:
        text = base64.urlsafe_b64encode(data).decode()
        return text if padding else text.rstrip("=")

    encoded_payload = encode(json.dumps(payload).encode())
    signature = hmac.new(secret, encoded_payload.encode(), hashlib.sha256).digest()
    return f"{encode(signature)}.{encoded_payload}"
