"""Every request is bounded and storable before a router sees it (app/request_guard.py):
a NUL or a lone surrogate anywhere (JSON keys and values, path, query) is a 422 problem
that changes nothing, and a body over 64 KiB is a 413 problem, chunked or not. On the
PostgreSQL tracking store a NUL used to reach the driver and answer 500."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.models import DeletionEvent, DeletionRequest
from app.request_guard import MAX_BODY_BYTES, storable, unstorable_in_json
from app.state import AppState
from tests.routers.test_problems import assert_problem

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"
SOME_ID = "5b0e1f1e-0000-4000-8000-000000000000"
UNSTORABLE = "String holds a character that cannot be stored (NUL or a lone surrogate)"
# What goes in at @@: JSON's escapes, and the UTF-8 bytes of a lone surrogate (which
# json.loads lets through as one).
BAD = {"nul": b"\\u0000", "surrogate": b"\\ud800", "raw-surrogate": b"\xed\xb3\xbf"}


def _json(template: str, bad: bytes) -> bytes:
    """A JSON body, written as text so that the escape travels as written, `bad` at @@."""
    return template.encode().replace(b"@@", bad)


# (what, method, path, JSON body with @@ where the bad character goes, expected loc)
BODIES = [
    ("site_name", "POST", URL, '{"kind":"account","subject":{"site_name":"a@@b"}}',
     ["body", "subject", "site_name"]),
    ("owner_email", "POST", URL, '{"kind":"account","subject":{"owner_email":"a@@@x.example"}}',
     ["body", "subject", "owner_email"]),
    ("page name", "POST", URL,
     '{"kind":"meta_data","subject":{"facebook_page_name":"Acme @@Records"}}',
     ["body", "subject", "facebook_page_name"]),
    ("reason", "POST", URL,
     '{"kind":"account","subject":{"site_name":"the-band"},"reason":"why@@"}', ["body", "reason"]),
    ("notify_email", "POST", URL,
     '{"kind":"account","subject":{"site_name":"the-band"},"notify_email":"p@@@example.com"}',
     ["body", "notify_email"]),
    ("a key", "POST", URL, '{"kind":"account","subject":{"site_name@@":"the-band"}}',
     ["body", "subject", "*"]),
    ("preview", "POST", URL + "/preview", '{"kind":"account","subject":{"site_name":"@@"}}',
     ["body", "subject", "site_name"]),
    ("cancel reason", "POST", f"{URL}/{SOME_ID}/cancel", '{"reason":"@@"}', ["body", "reason"]),
    ("approve subject", "POST", f"{URL}/{SOME_ID}/approve",
     '{"subject":{"site_name":"x@@"}}', ["body", "subject", "site_name"]),
    ("reject reason", "POST", f"{URL}/{SOME_ID}/reject", '{"reason":"spam@@"}',
     ["body", "reason"]),
    ("in a list", "POST", f"{URL}/{SOME_ID}/approve", '{"subject":{"x":["a","@@"]}}',
     ["body", "subject", "x", "1"]),
]  # fmt: skip


def _locs(problem: dict[str, Any]) -> list[Any]:
    return [error["loc"] for error in problem["errors"]]


async def _nothing_stored(state: AppState) -> None:
    async with state.sessionmaker() as session:
        assert (await session.execute(sa.select(DeletionRequest))).all() == []
        assert (await session.execute(sa.select(DeletionEvent))).all() == []


@pytest.mark.parametrize(
    ("method", "path", "template", "loc"),
    [case[1:] for case in BODIES],
    ids=[case[0] for case in BODIES],
)
async def test_an_unstorable_character_in_any_json_string_is_a_422_and_changes_nothing(
    client: httpx.AsyncClient,
    auth: Auth,
    state: AppState,
    method: str,
    path: str,
    template: str,
    loc: list[str],
) -> None:
    for name, bad in BAD.items():
        response = await client.request(
            method,
            path,
            content=_json(template, bad),
            headers={**auth(), "Content-Type": "application/json"},
        )
        problem = assert_problem(response, 422)
        expected = [{"loc": loc, "msg": UNSTORABLE, "type": "string_unstorable"}]
        assert problem["errors"] == expected, name
    await _nothing_stored(state)


async def test_a_json_body_without_content_type_is_checked_too(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    body = _json('{"kind":"account","subject":{"site_name":"a@@"}}', BAD["nul"])
    response = await client.post(URL, content=body, headers=auth())
    assert "content-type" not in response.request.headers
    assert_problem(response, 422)
    await _nothing_stored(state)


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe\x00", b'{"reason": "\xe9t\xe9"}', b"[" * 60_000, b"1" * 5000],
    ids=["binary", "latin-1", "nested", "long-number"],
)
async def test_a_json_body_that_cannot_be_read_is_a_422_not_a_400(
    client: httpx.AsyncClient, auth: Auth, body: bytes
) -> None:
    headers = {**auth(), "Content-Type": "application/json"}
    problem = assert_problem(await client.post(URL, content=body, headers=headers), 422)
    assert _locs(problem) == [["body"]]
    assert problem["errors"][0]["type"] == "json_invalid"  # type: ignore[index]


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        (URL + "?subject=site_name%3Da%00b", ["query", "subject"]),
        (URL + "?cursor=%00", ["query", "cursor"]),
        (URL + "?status=pending&x%00=1", ["query", "*"]),
        ("/deletion-status/abc%00def", ["path"]),
        ("/deletion-confirm/" + "a" * 40 + "%00", ["path"]),
        (f"{URL}/{SOME_ID}%00", ["path"]),
    ],
)
async def test_a_nul_in_the_path_or_a_query_parameter_is_a_422(
    client: httpx.AsyncClient, auth: Auth, path: str, loc: list[str]
) -> None:
    problem = assert_problem(await client.get(path, headers=auth()), 422)
    assert _locs(problem) == [loc]


async def test_the_characters_that_can_be_stored_still_can(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    name = "Caf\u00e9 \U0001f3b5 \u0001 \ufffd \u202e \t"  # emoji, control, replacement, bidi
    response = await client.post(
        URL,
        json={"kind": "meta_data", "subject": {"facebook_page_name": name}, "reason": name},
        headers=auth(),
    )
    assert response.status_code == 202, response.text
    listed = await client.get(URL + "?subject=facebook_page_name%3Dx%C3%A9", headers=auth())
    assert listed.status_code == 200


def _bodies_of(size: int) -> bytes:
    """A valid JSON create of exactly `size` bytes (the reason fills it)."""
    frame = '{"kind":"account","subject":{"site_name":"the-band"},"reason":"@@"}'
    return frame.replace("@@", "x" * (size - len(frame) + 2)).encode()


async def _chunked(body: bytes, chunk: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_64_kib_is_a_413_and_changes_nothing(
    client: httpx.AsyncClient, auth: Auth, state: AppState, chunked: bool
) -> None:
    body = _bodies_of(MAX_BODY_BYTES + 1)
    assert len(body) == MAX_BODY_BYTES + 1
    json.loads(body)  # well-formed: only its size is wrong
    headers = {**auth(), "Content-Type": "application/json"}
    content: Any = _chunked(body) if chunked else body
    response = await client.post(URL, content=content, headers=headers)
    if chunked:
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
    problem = assert_problem(response, 413)
    assert str(MAX_BODY_BYTES) in str(problem["detail"])
    await _nothing_stored(state)


async def test_a_body_of_64_kib_is_read(client: httpx.AsyncClient, auth: Auth) -> None:
    body = _bodies_of(MAX_BODY_BYTES)
    response = await client.post(
        URL, content=_chunked(body), headers={**auth(), "Content-Type": "application/json"}
    )
    problem = assert_problem(response, 422)  # read and validated: the reason is too long
    assert _locs(problem) == [["body", "account", "reason"]]


async def test_the_raw_email_route_keeps_its_own_one_mib_limit(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    raw = b"Subject: hello\r\nMessage-ID: <big@x>\r\n\r\n" + b"x\r\n" * (100 * 1024)
    response = await client.post(
        "/v1/inbound-email",
        content=_chunked(raw),
        headers={**auth(), "Content-Type": "message/rfc822"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["outcome"] == "ignored"


def test_storable_is_exactly_what_postgresql_text_takes() -> None:
    assert storable("") and storable("Caf\u00e9 \U0001f3b5 \u0001 \ufffd")
    assert not storable("a\x00") and not storable("\ud800") and not storable("x\udfff")
    assert list(unstorable_in_json({"a": [1, "ok", {"b\x00": None}], "c": "\ud83d"})) == [
        ["c"],
        ["a", 2, "*"],
    ]
    assert list(unstorable_in_json(uuid.uuid4().hex)) == []
