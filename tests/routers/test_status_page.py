"""The public status page: HTML and JSON, no login, no personal data."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

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
