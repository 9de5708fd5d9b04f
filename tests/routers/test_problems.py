"""Every 4xx/5xx is RFC 9457 problem JSON, without subject identifiers."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

Auth = Callable[..., dict[str, str]]


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"].startswith("https://")
    assert "Traceback" not in response.text
    return body


async def test_unknown_route_is_a_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nothing-here"), 404)


async def test_wrong_method_is_a_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.delete("/v1/deletion-requests"), 405)


@pytest.mark.parametrize(
    "subject",
    [
        {"owner_email": "private.person@example.com", "site_name": "secret-site"},
        {"tenant_id": "private.person@example.com"},
        {"owner_email": "private.person<at>example.com"},
    ],
)
async def test_validation_problem_has_errors_and_no_subject_values(
    client: httpx.AsyncClient, auth: Auth, subject: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/deletion-requests",
        json={"kind": "account", "subject": subject},
        headers=auth("deletions:write"),
    )
    body = assert_problem(response, 422)
    errors = body["errors"]
    assert isinstance(errors, list) and errors
    assert all({"loc", "msg", "type"} == set(e) for e in errors)
    for value in subject.values():
        assert value not in response.text
    assert "private" not in response.text and "secret" not in response.text


async def test_401_403_404_409_are_problems(client: httpx.AsyncClient, auth: Auth) -> None:
    assert_problem(await client.get("/v1/deletion-requests"), 401)
    assert_problem(await client.get("/v1/deletion-requests", headers=auth("deletions:write")), 403)
    assert_problem(
        await client.get(
            "/v1/deletion-requests/5b0e1f1e-0000-4000-8000-000000000000", headers=auth()
        ),
        404,
    )
