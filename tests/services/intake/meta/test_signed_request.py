"""The signed_request parser: one spelling per signature, issued_at bounded, and for any
input either a verified payload or ``InvalidSignedRequest`` (Hypothesis)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.services.intake.meta.signed_request import (
    FUTURE_SKEW,
    MAX_LENGTH,
    InvalidSignedRequest,
    SignedRequest,
    sign,
    verify,
)

SECRET = b"facebook-login-app-secret-0123456789"
NOW = 1_790_000_000
WEEK = 604_800
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def payload(**extra: Any) -> dict[str, Any]:
    return {"algorithm": "HMAC-SHA256", "user_id": "10215554443332", "issued_at": NOW, **extra}


def parse(value: str | None, *, max_age: int = WEEK, now: float = NOW) -> SignedRequest:
    return verify(value, SECRET, max_age=max_age, now=now)


def outcome(value: str, **kwargs: Any) -> SignedRequest | None:
    """The verified request, or None for the one documented error; anything else fails."""
    try:
        return parse(value, **kwargs)
    except InvalidSignedRequest:
        return None


def flip_spare_bits(segment: str) -> list[str]:
    """The segment with each non-zero pattern of its last character's unused low bits."""
    unused = {2: 4, 3: 2}.get(len(segment.rstrip("=")) % 4, 0)
    last = B64URL.index(segment.rstrip("=")[-1])
    stripped = segment.rstrip("=")
    return [stripped[:-1] + B64URL[last ^ bits] for bits in range(1, 1 << unused)]


def re_encodings(value: str) -> list[str]:
    """Other spellings of the same bytes: padding (right and wrong), the standard
    alphabet, spare bits set."""
    signature, body = value.split(".")
    spellings = [signature + "=", signature + "==", signature + "===", signature + "."]
    spellings += [signature.replace("-", "+").replace("_", "/")]
    spellings += flip_spare_bits(signature)
    return [s + "." + body if not s.endswith(".") else s + body for s in spellings]


def test_a_valid_signed_request_is_verified_with_its_decoded_signature() -> None:
    value = sign(payload(), SECRET)
    verified = parse(value)
    assert verified.user_id == "10215554443332" and verified.issued_at == NOW
    expected = hmac.new(SECRET, value.split(".")[1].encode(), hashlib.sha256).digest()
    assert verified.signature == expected


@pytest.mark.parametrize(
    "spelling", ["sig+'='", "sig+'=='", "spare bit flipped", "standard alphabet"]
)
def test_each_re_encoding_of_the_signature_is_refused_or_the_same(spelling: str) -> None:
    # A signature whose base64url has '-' or '_' in it, so the alphabet swap changes it.
    issued = NOW
    while True:
        value = sign(payload(issued_at=issued), SECRET)
        if any(c in value.split(".")[0] for c in "-_"):
            break
        issued -= 1
    signature, body = value.split(".")
    original = parse(value)
    variant = {
        "sig+'='": f"{signature}=.{body}",
        "sig+'=='": f"{signature}==.{body}",
        "spare bit flipped": f"{flip_spare_bits(signature)[0]}.{body}",
        "standard alphabet": f"{signature.replace('-', '+').replace('_', '/')}.{body}",
    }[spelling]
    assert variant != value
    result = outcome(variant)
    assert result is None or result.signature == original.signature
    if spelling == "sig+'='":
        # Exactly the right padding is tolerated, and it is the same signature.
        assert result is not None and result.signature == original.signature
    else:
        assert result is None


def test_padding_is_tolerated_when_it_is_exactly_right() -> None:
    padded = sign(payload(), SECRET, padding=True)
    assert "=" in padded
    assert parse(padded).user_id == "10215554443332"


@pytest.mark.parametrize(
    ("issued_at", "max_age", "accepted"),
    [
        (NOW, WEEK, True),
        (NOW - WEEK, WEEK, True),
        (NOW - WEEK - 1, WEEK, False),
        (NOW - 10 * 365 * 86400, WEEK, False),
        (NOW - 10 * 365 * 86400, 0, True),  # 0: no limit
        (NOW + FUTURE_SKEW, WEEK, True),
        (NOW + FUTURE_SKEW + 1, WEEK, False),
        (NOW + FUTURE_SKEW + 1, 0, False),  # the future is refused even without a limit
        ("1790000000", WEEK, False),
        (1.79e9, WEEK, False),
        (True, WEEK, False),
        (-1, 0, False),
        (None, WEEK, False),
        (None, 0, True),
    ],
)
def test_issued_at_must_be_recent_and_not_in_the_future(
    issued_at: Any, max_age: int, accepted: bool
) -> None:
    body = payload(issued_at=issued_at)
    if issued_at is None:
        del body["issued_at"]
    value = sign(body, SECRET)
    if accepted:
        assert parse(value, max_age=max_age).user_id == "10215554443332"
    else:
        with pytest.raises(InvalidSignedRequest):
            parse(value, max_age=max_age)


def test_deeply_nested_payload_is_the_documented_error() -> None:
    body = base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("=")
    signature = hmac.new(SECRET, body.encode(), hashlib.sha256).digest()
    value = base64.urlsafe_b64encode(signature).decode().rstrip("=") + "." + body
    assert len(value) <= MAX_LENGTH
    with pytest.raises(InvalidSignedRequest, match="not JSON"):
        parse(value)


# --- properties -----------------------------------------------------------------------


@given(st.text(max_size=300))
@example("")
@example(".")
@example("a.b")
@example("====.====")
@example("\x00.\x00")
@example("é.é")
def test_any_string_is_verified_or_the_documented_error(value: str) -> None:
    result = outcome(value)
    # Nothing but a signature made with the secret can pass.
    assert result is None


@given(
    st.text(alphabet=B64URL + "=+/", min_size=1, max_size=60),
    st.text(alphabet=B64URL + "=+/.", max_size=200),
)
def test_any_base64_looking_string_is_verified_or_the_documented_error(
    signature: str, body: str
) -> None:
    assert outcome(f"{signature}.{body}") is None


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    user_id=st.one_of(st.integers(), st.text(max_size=40)),
    issued_at=st.one_of(st.none(), st.integers(min_value=-(2**40), max_value=2**40), JSONISH),
    extra=st.dictionaries(st.text(max_size=10), JSONISH, max_size=3),
    padding=st.booleans(),
)
def test_signed_payloads_are_verified_or_refused_and_re_encodings_never_differ(
    user_id: Any, issued_at: Any, extra: dict[str, Any], padding: bool
) -> None:
    body = {**extra, "algorithm": "HMAC-SHA256", "user_id": user_id, "issued_at": issued_at}
    value = sign(body, SECRET, padding=padding)
    verified = outcome(value)
    if verified is not None:
        assert verified.issued_at is not None
        assert NOW - WEEK <= verified.issued_at <= NOW + FUTURE_SKEW
        assert verified.user_id and verified.user_id == verified.user_id.strip()
    for other in re_encodings(value):
        again = outcome(other)
        # Another spelling is refused, or it is the very same signature (same replay key).
        assert again is None or (verified is not None and again.signature == verified.signature)


@given(st.binary(min_size=1, max_size=64))
def test_every_value_has_one_accepted_spelling(data: bytes) -> None:
    """The decoder behind both segments: the canonical spelling (padded or not) decodes,
    every spare-bit variant is refused."""
    from app.services.intake.meta.signed_request import _b64url

    canonical = base64.urlsafe_b64encode(data).decode()
    assert _b64url(canonical) == data
    assert _b64url(canonical.rstrip("=")) == data
    for variant in flip_spare_bits(canonical):
        with pytest.raises(InvalidSignedRequest):
            _b64url(variant)
    if canonical.endswith("="):
        with pytest.raises(InvalidSignedRequest):
            _b64url(canonical + "=")


def test_time_is_read_from_the_clock_by_default() -> None:
    fresh = sign(payload(issued_at=int(time.time())), SECRET)
    assert verify(fresh, SECRET, max_age=WEEK).user_id == "10215554443332"
    stale = sign(payload(issued_at=int(time.time()) - WEEK - 60), SECRET)
    with pytest.raises(InvalidSignedRequest, match="too old"):
        verify(stale, SECRET, max_age=WEEK)


def test_the_payload_segment_must_be_canonical_too() -> None:
    body_json = json.dumps(payload(x="1")).encode()
    canonical = base64.urlsafe_b64encode(body_json).decode().rstrip("=")
    variants = flip_spare_bits(canonical)
    assert variants  # the payload's length leaves spare bits
    for body in variants:
        signature = hmac.new(SECRET, body.encode(), hashlib.sha256).digest()
        value = base64.urlsafe_b64encode(signature).decode().rstrip("=") + "." + body
        with pytest.raises(InvalidSignedRequest):
            parse(value)
