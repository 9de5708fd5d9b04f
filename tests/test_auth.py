"""Bearer JWT: 401 versus 403 exactly, HS256 and JWKS (RS256, ES256), no algorithm confusion."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from app.state import AppState
from tests.app_fixtures import JWT_SECRET, bearer, mint

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"
BODY = {"kind": "account", "subject": {"site_name": "auth-test"}}


async def test_missing_token_is_401_with_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get(URL)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("case", "token"),
    [
        ("garbage", "not.a.jwt"),
        ("wrong secret", mint(secret="another-secret-that-is-long-enough-too!!")),
        ("expired", mint(ttl=-120)),
        ("wrong audience", mint(aud="someone-else")),
        ("no subject", mint(sub=None)),
        ("no expiry", jwt.encode({"sub": "x", "aud": "soundops-deletion"}, JWT_SECRET)),
        ("alg none", jwt.encode({"sub": "x", "aud": "soundops-deletion"}, "", algorithm="none")),
    ],
)
async def test_invalid_tokens_are_401(client: httpx.AsyncClient, case: str, token: str) -> None:
    response = await client.get(URL, headers=bearer(token))
    assert response.status_code == 401, case
    assert response.json()["status"] == 401


async def test_a_remembered_token_does_not_vouch_for_a_changed_one(
    client: httpx.AsyncClient,
) -> None:
    token = mint(("deletions:read",))
    assert (await client.get(URL, headers=bearer(token))).status_code == 200
    assert (await client.get(URL, headers=bearer(token))).status_code == 200  # remembered
    header, payload, signature = token.split(".")
    forged = ".".join(
        [header, payload, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")]
    )
    assert (await client.get(URL, headers=bearer(forged))).status_code == 401
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["scope"] = "deletions:admin"
    tampered = jwt.encode(claims, "another-secret-that-is-long-enough-too!!", algorithm="HS256")
    assert (await client.get(URL, headers=bearer(tampered))).status_code == 401


async def test_a_remembered_token_is_never_taken_past_its_expiry(
    client: httpx.AsyncClient, state: AppState
) -> None:
    token = mint(("deletions:read",), ttl=-25)  # expired 25 s ago: within the 30 s leeway
    assert (await client.get(URL, headers=bearer(token))).status_code == 200
    (remembered,) = state.verifier._verified.values()
    assert remembered[1] <= jwt.decode(token, options={"verify_signature": False})["exp"]


async def test_basic_scheme_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(URL, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "granted", "expected"),
    [
        ("GET", URL, "deletions:write", 403),
        ("GET", URL, "deletions:read", 200),
        ("GET", URL, "deletions:admin", 200),
        ("POST", URL, "deletions:read", 403),
        ("POST", URL, "deletions:write", 202),
        ("POST", URL, "deletions:admin", 202),
        ("POST", f"{URL}/00000000-0000-0000-0000-000000000000/cancel", "deletions:write", 403),
        ("POST", f"{URL}/00000000-0000-0000-0000-000000000000/cancel", "deletions:read", 403),
        ("POST", f"{URL}/00000000-0000-0000-0000-000000000000/cancel", "deletions:admin", 404),
        ("GET", URL, "", 403),
    ],
)
async def test_scopes(
    client: httpx.AsyncClient, method: str, path: str, granted: str, expected: int
) -> None:
    token = mint(granted.split())
    response = await client.request(
        method, path, json=BODY if method == "POST" and path == URL else None, headers=bearer(token)
    )
    assert response.status_code == expected, response.text
    if expected == 403:
        assert response.json()["title"] == "Missing scope"


@pytest.mark.settings(jwt_issuer="https://auth.soundops.test")
async def test_issuer_is_checked_when_configured(client: httpx.AsyncClient) -> None:
    good = await client.get(URL, headers=bearer(mint(iss="https://auth.soundops.test")))
    assert good.status_code == 200
    wrong = await client.get(URL, headers=bearer(mint(iss="https://evil.test")))
    assert wrong.status_code == 401
    missing = await client.get(URL, headers=bearer(mint()))
    assert missing.status_code == 401


class JwksServer:
    """A real HTTP server on a free port that serves a JWKS document."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = RSAAlgorithm if alg == "RS256" else ECAlgorithm
    data: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    data.update(kid=kid, alg=alg, use="sig")
    return data


@pytest.fixture
def jwks_settings(jwks_server: JwksServer) -> dict[str, Any]:
    jwks_server.document = {
        "keys": [_jwk(RSA_KEY, "rsa-1", "RS256"), _jwk(EC_KEY, "ec-1", "ES256")]
    }
    return {"jwt_secret": None, "jwt_jwks_url": jwks_server.url}


class TestJwks:
    @pytest.fixture
    def settings_overrides(self, jwks_settings: dict[str, Any]) -> dict[str, Any]:
        return jwks_settings

    @pytest.mark.parametrize(
        ("key", "kid", "alg"), [(RSA_KEY, "rsa-1", "RS256"), (EC_KEY, "ec-1", "ES256")]
    )
    async def test_asymmetric_tokens_verify_against_the_jwks(
        self, client: httpx.AsyncClient, key: Any, kid: str, alg: str
    ) -> None:
        token = mint(secret=key, algorithm=alg, headers={"kid": kid})
        response = await client.get(URL, headers=bearer(token))
        assert response.status_code == 200, response.text

    async def test_keys_are_cached(
        self, client: httpx.AsyncClient, jwks_server: JwksServer
    ) -> None:
        before = jwks_server.hits
        for _ in range(3):
            token = mint(secret=RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
            assert (await client.get(URL, headers=bearer(token))).status_code == 200
        assert jwks_server.hits - before == 1

    async def test_unknown_kid_is_401(self, client: httpx.AsyncClient) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = mint(secret=other, algorithm="RS256", headers={"kid": "rsa-unknown"})
        assert (await client.get(URL, headers=bearer(token))).status_code == 401

    async def test_right_kid_wrong_key_is_401(self, client: httpx.AsyncClient) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = mint(secret=other, algorithm="RS256", headers={"kid": "rsa-1"})
        assert (await client.get(URL, headers=bearer(token))).status_code == 401

    async def test_hs256_token_signed_with_the_public_key_is_rejected(
        self, client: httpx.AsyncClient
    ) -> None:
        """The classic key-confusion attack: the algorithm comes from config, not the header."""
        from cryptography.hazmat.primitives import serialization

        public_pem = RSA_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        payload = {"sub": "x", "aud": "soundops-deletion", "exp": 2**31, "scope": "deletions:read"}
        forged = _hs256(payload, public_pem, kid="rsa-1")
        assert (await client.get(URL, headers=bearer(forged))).status_code == 401


def _hs256(payload: dict[str, Any], key: bytes, kid: str) -> str:
    """Sign with HMAC by hand (PyJWT refuses PEM keys as HMAC secrets, as it should)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(payload).encode())
    signature = b64(hmac.new(key, header + b"." + body, hashlib.sha256).digest())
    return (header + b"." + body + b"." + signature).decode()


async def test_jwks_unreachable_is_503_not_500(tracking_url: str) -> None:
    from app.main import create_app
    from tests.app_fixtures import make_settings

    settings = make_settings(
        tracking_url, jwt_secret=None, jwt_jwks_url="http://127.0.0.1:9/jwks.json"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            token = mint(secret=RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
            response = await client.get(URL, headers=bearer(token))
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
