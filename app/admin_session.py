"""The operators' console session: the admin JWT in an HttpOnly cookie, verified on every
page exactly as the REST API verifies a bearer token, and CSRF tokens bound to it.

The cookie holds the token itself (no server-side session table): it expires with the
token, and signing out or the token's expiry ends it. A form's CSRF token is an HMAC of
the session's token under a key derived from ``DELETION_HASH_KEY`` with a label of its
own, so a token from another session (or none) never matches. No web framework here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import jwt

from app.auth import Principal, Scope, TokenVerifier, require_scope
from app.settings import Settings

COOKIE = "soundops_admin"
LOGIN_COOKIE = "soundops_admin_login"
LOGIN_COOKIE_SECONDS = 3600
COOKIE_PATH = "/admin"
# The longest token the sign-in form accepts (a JWT of a few claims is far shorter).
MAX_TOKEN_LENGTH = 8192
_CSRF_LABEL = b"soundops-deletion admin console csrf v1"


@dataclass(frozen=True)
class AdminSession:
    principal: Principal
    expires_at: int  # the token's exp (seconds since the epoch)
    csrf: str  # what every form of this session carries


def _mac(settings: Settings, message: bytes) -> str:
    key = hmac.new(settings.effective_hash_key, _CSRF_LABEL, hashlib.sha256).digest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _csrf_for(settings: Settings, token: str) -> str:
    return _mac(settings, b"session:" + hashlib.sha256(token.encode()).digest())


def new_login_nonce() -> str:
    """The sign-in form's own CSRF secret, kept in a short-lived cookie of its own."""
    return secrets.token_urlsafe(24)


def login_csrf(settings: Settings, nonce: str) -> str:
    """The sign-in form's CSRF token: bound to the nonce in the browser's login cookie."""
    return _mac(settings, b"login:" + nonce.encode())


def login_csrf_valid(settings: Settings, nonce: str | None, given: str | None) -> bool:
    if not nonce or not given or len(nonce) > 64:
        return False
    return hmac.compare_digest(login_csrf(settings, nonce).encode(), given.encode())


async def open_session(settings: Settings, verifier: TokenVerifier, token: str) -> AdminSession:
    """The session of an admin token: ``Unauthorized`` (invalid, expired), ``Forbidden``
    (a token without ``deletions:admin``), as the REST API answers."""
    principal = await verifier.verify(token)
    require_scope(principal, Scope.admin)
    # Verified just now (signature, audience, issuer, exp required): its exp is trusted.
    claims = jwt.decode(token, options={"verify_signature": False})
    return AdminSession(principal, int(claims["exp"]), _csrf_for(settings, token))


def seconds_left(session: AdminSession, now: float | None = None) -> int:
    return max(0, session.expires_at - int(now if now is not None else time.time()))


def csrf_valid(session: AdminSession, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf.encode(), given.encode())


def same_origin(origin: str | None, referer: str | None, hosts: set[str]) -> bool:
    """A form's POST came from one of our pages: its Origin (else its Referer), where the
    browser sends one, names one of ``hosts`` (host[:port]). Neither header: True (the
    CSRF token still decides); ``Origin: null`` (sandboxed, cross-origin redirects): False."""
    source = origin if origin is not None else referer
    if source is None:
        return True
    if source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme in {"http", "https"} and parts.netloc.lower() in hosts
