"""The public status page: HTML and JSON, no login, no personal data."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.serve_process import PRODUCTION, clean_env, start

Auth = Callable[..., dict[str, str]]


async def test_status_page_shows_status_without_identifiers(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    tenant_id = str(uuid.uuid4())
    email = "person.private@example.com"
    created = (
        await client.post(
            "/v1/deletion-requests",
            json={
                "kind": "account",
                "subject": {"tenant_id": tenant_id},
                "notify_email": email,
                "reason": "Asked by Jane Private on the phone",
            },
            headers=auth("deletions:write", subject="backend-svc"),
        )
    ).json()
    page = await client.get(created["status_url"].removeprefix("https://deletion.soundops.test"))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "Received, waiting to start" in html
    assert "Deletion of a SoundOps account" in html
    assert '<html lang="en">' in html
    for secret in (tenant_id, email, "Jane", created["id"], "backend-svc"):
        assert secret not in html

    as_json = await client.get(
        f"/deletion-status/{created['confirmation_code']}",
        headers={"Accept": "application/json"},
    )
    assert as_json.status_code == 200
    data = as_json.json()
    assert data["status"] == "pending"
    assert data["kind"] == "account"
    assert [s["store"] for s in data["stores"]] == ["meta_graph", "postgres", "mongodb", "s3"]
    for secret in (tenant_id, email, "Jane", created["id"], "backend-svc"):
        assert secret not in as_json.text


async def test_unknown_code_is_404_in_html_and_json(client: httpx.AsyncClient) -> None:
    html = await client.get("/deletion-status/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert html.status_code == 404
    assert "Request not found" in html.text
    data = await client.get(
        "/deletion-status/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", headers={"Accept": "application/json"}
    )
    assert data.status_code == 404
    assert data.headers["content-type"] == "application/problem+json"
    odd = await client.get("/deletion-status/%3Cscript%3E")
    assert odd.status_code == 404
    assert "<script>" not in odd.text


@pytest.mark.settings(status_page_per_minute=3)
async def test_the_public_page_is_rate_limited(client: httpx.AsyncClient) -> None:
    codes = [
        (await client.get("/deletion-status/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).status_code
        for _ in range(4)
    ]
    assert codes == [404, 404, 404, 429]
    limited = await client.get(
        "/deletion-status/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", headers={"Accept": "application/json"}
    )
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "60"


# --- whose address the rate limit counts (issue 14, item 12) ---------------------------

UNKNOWN = "/deletion-status/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        # No trusted proxy: the header is ignored, whoever sends it.
        ("127.0.0.1", ["198.51.100.7"], "", "127.0.0.1"),
        ("203.0.113.5", ["198.51.100.7"], "10.0.0.0/8", "203.0.113.5"),
        # Behind a trusted proxy: the right-most address that is not a trusted proxy.
        ("10.0.0.2", ["198.51.100.7"], "10.0.0.0/8", "198.51.100.7"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.7"], "10.0.0.0/8", "198.51.100.7"),
        ("10.0.0.2", ["6.6.6.6", "198.51.100.7, 10.0.0.9"], "10.0.0.0/8", "198.51.100.7"),
        ("::1", ["2001:db8::5"], "::1", "2001:db8::5"),
        ("10.0.0.2", ["not-an-ip, 10.0.0.3"], "10.0.0.0/8", "not-an-ip"),
        # A trusted proxy without the header, or with only proxies in it.
        ("10.0.0.2", [], "10.0.0.0/8", "10.0.0.2"),
        ("10.0.0.2", ["10.0.0.4, 10.0.0.3"], "10.0.0.0/8", "10.0.0.4"),
    ],
)
def test_the_client_is_the_right_most_untrusted_address(
    peer: str, forwarded: list[str], trusted: str, expected: str
) -> None:
    from app.ratelimit import client_address
    from app.settings import Settings

    proxies = Settings(environment="development", forwarded_allow_ips=trusted)
    assert client_address(peer, forwarded, proxies.forwarded_allow_ips) == expected


async def _codes(app: FastAPI, peer: str, forwarded: list[str | None]) -> list[int]:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return [
            (await client.get(UNKNOWN, headers={"X-Forwarded-For": f} if f else {})).status_code
            for f in forwarded
        ]


@pytest.mark.settings(status_page_per_minute=2, forwarded_allow_ips="10.0.0.0/8")
async def test_behind_a_trusted_proxy_each_visitor_has_a_limit_of_their_own(
    app: FastAPI,
) -> None:
    proxy = "10.1.2.3"
    assert await _codes(app, proxy, ["198.51.100.7", "198.51.100.7", "198.51.100.7"]) == [
        404,
        404,
        429,
    ]
    # Another visitor behind the same proxy is not held back by the first.
    assert await _codes(app, proxy, ["198.51.100.8"]) == [404]
    # A visitor cannot escape by writing addresses of its own in front.
    assert await _codes(app, proxy, ["1.1.1.1, 198.51.100.8", "2.2.2.2, 198.51.100.8"]) == [
        404,
        429,
    ]
    # An untrusted peer's header is ignored: it is counted by its own address.
    assert await _codes(app, "203.0.113.5", ["9.9.9.1", "9.9.9.2", "9.9.9.3"]) == [
        404,
        404,
        429,
    ]


def test_a_spoofed_forwarded_for_gets_no_fresh_limit_from_the_running_service(
    tmp_path: Path,
) -> None:
    """The real server (uvicorn) from loopback: unset DELETION_FORWARDED_ALLOW_IPS trusts
    no proxy, so a new X-Forwarded-For per request does not reset the limit; with the
    proxy trusted, the limit follows the client behind it."""

    def spoofed(base: str) -> list[int]:
        return [
            httpx.get(base + UNKNOWN, headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
            for i in range(4)
        ]

    env = clean_env(
        tmp_path, **PRODUCTION, DELETION_ENVIRONMENT="test", DELETION_STATUS_PAGE_PER_MINUTE="3"
    )
    assert start(tmp_path, env, probe=spoofed).probe == [404, 404, 404, 429]

    def behind_proxy(base: str) -> list[int]:
        clients = ["198.51.100.1"] * 4 + ["6.6.6.6, 198.51.100.2"]
        return [
            httpx.get(base + UNKNOWN, headers={"X-Forwarded-For": f}).status_code for f in clients
        ]

    trusted = {**env, "DELETION_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    assert start(tmp_path, trusted, probe=behind_proxy).probe == [404, 404, 404, 429, 404]
