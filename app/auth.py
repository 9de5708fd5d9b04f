"""Bearer JWT authentication (PyJWT) and scopes.

Algorithms come from configuration, never from the token's header: HS256 with
``DELETION_JWT_SECRET``, or RS256/ES256 with keys fetched from
``DELETION_JWT_JWKS_URL`` (asynchronously, cached, refetched at most once a
minute for an unknown ``kid``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import httpx
import jwt
import structlog

from app.errors import Forbidden, ServiceUnavailable, Unauthorized
from app.settings import Settings

log = structlog.get_logger(__name__)


class Scope(StrEnum):
    write = "deletions:write"
    read = "deletions:read"
    admin = "deletions:admin"


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]

    def allows(self, scope: Scope) -> bool:
        return scope.value in self.scopes or Scope.admin.value in self.scopes


class JwksCache:
    """Keys of a JWKS URL, fetched with the shared httpx client and cached."""

    MIN_REFRESH_SECONDS = 60.0

    def __init__(self, url: str, client: httpx.AsyncClient, ttl_seconds: float) -> None:
        self._url = url
        self._client = client
        self._ttl = ttl_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        try:
            response = await self._client.get(self._url, timeout=5.0)
            response.raise_for_status()
            jwk_set = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("jwks_fetch_failed", error_type=type(exc).__name__)
            raise ServiceUnavailable("The signing keys could not be fetched.") from exc
        self._keys = {key.key_id or "": key for key in jwk_set.keys}
        self._fetched_at = time.monotonic()

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            # A token without kid is accepted only when the set has exactly one key.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def get(self, kid: str | None) -> jwt.PyJWK:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            key = self._find(kid)
            if age > self._ttl or (key is None and age > self.MIN_REFRESH_SECONDS):
                await self._refresh()
                key = self._find(kid)
        if key is None:
            raise Unauthorized("The token's signing key is unknown.")
        return key


class TokenVerifier:
    """Verifies bearer tokens. A token that verified is remembered for at most
    ``VERIFIED_SECONDS`` and never past its ``exp`` (callers reuse one token for many
    calls; the signature check was a fifth of the intake's CPU): the same token then skips
    the cryptography, not the expiry. JWKS keys are trusted for longer than that anyway."""

    VERIFIED_SECONDS = 30.0
    VERIFIED_MAX = 1024

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self._settings = settings
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._algorithms = settings.effective_jwt_algorithms
        self._jwks = (
            JwksCache(settings.jwt_jwks_url, client, settings.jwks_cache_seconds)
            if settings.jwt_jwks_url
            else None
        )
        # The development secret only in development (Settings refuses it elsewhere).
        self._secret = None if self._jwks is not None else settings.effective_jwt_secret

    async def _key(self, token: str) -> Any:
        if self._jwks is None:
            return self._secret
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("The bearer token is malformed.") from exc
        kid = header.get("kid")
        return (await self._jwks.get(kid if isinstance(kid, str) else None)).key

    async def verify(self, token: str) -> Principal:
        now = time.time()
        remembered = self._verified.get(token)
        if remembered is not None:
            if remembered[1] > now:
                return remembered[0]
            del self._verified[token]
        principal, expires = await self._decode(token)
        if len(self._verified) >= self.VERIFIED_MAX:
            self._verified.clear()
        self._verified[token] = (principal, min(now + self.VERIFIED_SECONDS, expires))
        return principal

    async def _decode(self, token: str) -> tuple[Principal, float]:
        key = await self._key(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                options={"require": ["exp", "sub"]},
                leeway=timedelta(seconds=30),
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The bearer token has expired.") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthorized("The bearer token is not meant for this service.") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthorized("The bearer token's issuer is not trusted.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The bearer token is invalid.") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("The bearer token has no subject.")
        scope = claims.get("scope", "")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        expires = claims["exp"]
        return Principal(subject=subject, scopes=scopes), float(expires)


def require_scope(principal: Principal, scope: Scope) -> None:
    if not principal.allows(scope):
        raise Forbidden(f"This action needs the scope {scope.value}.")


def mint_token(
    settings: Settings,
    *,
    subject: str,
    scopes: list[str],
    ttl: timedelta = timedelta(hours=1),
) -> str:
    """A local HS256 token from ``DELETION_JWT_SECRET`` (the ``token`` command)."""
    if settings.jwt_jwks_url:
        raise ValueError("tokens are issued by the JWKS owner; the token command needs HS256")
    secret = settings.effective_jwt_secret
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "scope": " ".join(scopes),
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + int(ttl.total_seconds()),
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, secret, algorithm="HS256")
