"""Meta's signed-request callbacks: data deletion and deauthorize, for both login families."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa

from app.models import DeletionRequest, MetaDeauthorization
from app.services.intake.meta.signed_request import sign
from app.state import AppState
from tests.app_fixtures import PUBLIC_BASE_URL
from tests.engine_support import run_until_settled
from testsupport.seed import World, make_world, seed_postgres

FB_SECRET = b"facebook-login-app-secret-0123456789"
IG_SECRET = b"instagram-login-app-secret-0123456789"
Auth = Callable[..., dict[str, str]]


@pytest.fixture
async def world_db(fresh_pg_database: Any, soundops_template_database: str) -> AsyncIterator[Any]:
    database = fresh_pg_database(template=soundops_template_database, prefix="soundops")
    world = make_world()
    await seed_postgres(database.url, world)
    yield database, world


@pytest.fixture
def world(world_db: Any) -> World:
    result: World = world_db[1]
    return result


@pytest.fixture
def settings_overrides(world_db: Any) -> dict[str, Any]:
    return {
        "meta_app_secret": FB_SECRET.decode(),
        "instagram_app_secret": IG_SECRET.decode(),
        "target_postgres_url": world_db[0].url,
    }


def payload(user_id: Any = "10215554443332", **extra: Any) -> dict[str, Any]:
    return {"algorithm": "HMAC-SHA256", "user_id": user_id, "issued_at": int(time.time()), **extra}


async def post(client: httpx.AsyncClient, path: str, value: str | None) -> httpx.Response:
    data = {} if value is None else {"signed_request": value}
    return await client.post(path, data=data)


async def count_requests(state: AppState) -> int:
    async with state.sessionmaker() as session:
        return int(
            await session.scalar(sa.select(sa.func.count()).select_from(DeletionRequest)) or 0
        )


@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize(
    ("path", "secret", "identity"),
    [
        ("/meta/data-deletion", FB_SECRET, "facebook_user_id"),
        ("/meta/instagram/data-deletion", IG_SECRET, "ig_user_id"),
    ],
)
async def test_data_deletion_callback_files_a_meta_data_request(
    client: httpx.AsyncClient,
    auth: Auth,
    path: str,
    secret: bytes,
    identity: str,
    padding: bool,
) -> None:
    value = sign(payload("17841400000000777"), secret, padding=padding)
    if padding:
        assert "=" in value
    response = await post(client, path, value)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"url", "confirmation_code"}
    code = body["confirmation_code"]
    assert code.isalnum() and len(code) >= 20
    assert body["url"] == f"{PUBLIC_BASE_URL}/deletion-status/{code}"
    listing = (await client.get("/v1/deletion-requests", headers=auth())).json()["items"]
    assert len(listing) == 1
    assert listing[0]["kind"] == "meta_data" and listing[0]["source"] == "meta_callback"
    assert (
        listing[0]["requested_by"] == f"meta:{'facebook' if secret == FB_SECRET else 'instagram'}"
    )
    assert listing[0]["confirmation_code"] == code


async def test_the_same_signed_request_twice_is_one_request(
    client: httpx.AsyncClient, state: AppState
) -> None:
    value = sign(payload(), FB_SECRET)
    first = await post(client, "/meta/data-deletion", value)
    second = await post(client, "/meta/data-deletion", value)
    assert first.json() == second.json()
    assert await count_requests(state) == 1


def _segments(value: str) -> tuple[str, str]:
    signature, body = value.split(".")
    return signature, body


def _resign(body: str, secret: bytes) -> str:
    signature = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(signature).decode().rstrip("=") + "." + body


def _encoded(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


GOOD = sign(payload(), FB_SECRET)
MALFORMED = {
    "missing field": None,
    "one segment": _segments(GOOD)[1],
    "three segments": GOOD + ".abc",
    "bad base64": "!!!." + _segments(GOOD)[1],
    "short signature": base64.urlsafe_b64encode(b"short").decode() + "." + _segments(GOOD)[1],
    "wrong secret": sign(payload(), b"some-other-secret"),
    "other family's secret": sign(payload(), IG_SECRET),
    "tampered payload": _segments(GOOD)[0] + "." + _encoded(payload(user_id="999")),
    "wrong algorithm": sign(payload(algorithm="HMAC-SHA1"), FB_SECRET),
    "missing user_id": sign({"algorithm": "HMAC-SHA256", "issued_at": 1}, FB_SECRET),
    "empty user_id": sign(payload(user_id=" "), FB_SECRET),
    "non-numeric user_id": sign(payload(user_id="abc"), FB_SECRET),
    "payload not an object": _resign(_encoded([1, 2]), FB_SECRET),
    "payload not JSON": _resign(base64.urlsafe_b64encode(b"{nope").decode().rstrip("="), FB_SECRET),
    "oversized field": sign(payload(padding_field="x" * 5000), FB_SECRET),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_signed_requests_are_400_and_change_nothing(
    client: httpx.AsyncClient, state: AppState, case: str
) -> None:
    response = await post(client, "/meta/data-deletion", MALFORMED[case])
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["title"] == "Invalid signed_request"
    assert FB_SECRET.decode() not in response.text
    assert await count_requests(state) == 0


async def test_a_huge_body_is_refused_without_reading_it_all(
    client: httpx.AsyncClient, state: AppState
) -> None:
    response = await client.post(
        "/meta/data-deletion",
        content=b"signed_request=" + b"a" * 100_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert await count_requests(state) == 0


async def test_unconfigured_family_answers_503(tracking_url: str) -> None:
    from app.main import create_app
    from tests.app_fixtures import make_settings

    app = create_app(make_settings(tracking_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await post(
                client, "/meta/instagram/data-deletion", sign(payload(), IG_SECRET)
            )
    assert response.status_code == 503
    assert "DELETION_INSTAGRAM_APP_SECRET" in response.json()["detail"]


async def test_facebook_deauthorize_disconnects_every_account_of_the_person(
    client: httpx.AsyncClient, auth: Auth, world: World
) -> None:
    fb = world.tenants["alpha"].accounts[0]
    value = sign(payload(fb.facebook_user_id), FB_SECRET)
    response = await post(client, "/meta/deauthorize", value)
    assert response.status_code == 200, response.text
    assert response.json() == {"expanded": True, "disconnects": 1, "skipped_reconnected": 0}
    again = await post(client, "/meta/deauthorize", value)
    assert again.json() == response.json()
    items = (await client.get("/v1/deletion-requests", headers=auth())).json()["items"]
    assert [(i["kind"], i["source"]) for i in items] == [("instagram_disconnect", "meta_callback")]


async def test_the_same_deauthorize_delivered_many_times_at_once_is_one_record(
    client: httpx.AsyncClient, auth: Auth, world: World, state: AppState
) -> None:
    """Concurrent deliveries of one callback race to store it: one row (the unique
    replay key decides, as one statement on PostgreSQL), one disconnect, and every
    delivery answered 200 without a 500 from the race."""
    fb = world.tenants["alpha"].accounts[0]
    value = sign(payload(fb.facebook_user_id), FB_SECRET)
    responses = await asyncio.gather(*(post(client, "/meta/deauthorize", value) for _ in range(8)))
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    assert await count_rows(state, MetaDeauthorization) == 1
    # The first delivery expands it at once; a twin that found it held answers
    # ``expanded: false``, none files a second disconnect.
    expanded = [r.json() for r in responses if r.json()["expanded"]]
    assert expanded
    assert all(
        e == {"expanded": True, "disconnects": 1, "skipped_reconnected": 0} for e in expanded
    )
    items = (await client.get("/v1/deletion-requests", headers=auth())).json()["items"]
    assert [i["kind"] for i in items] == ["instagram_disconnect"]


async def test_deauthorize_older_than_a_reconnection_leaves_the_account_alone(
    client: httpx.AsyncClient, auth: Auth, world_db: Any
) -> None:
    database, world = world_db
    account = world.tenants["bravo"].accounts[0]
    conn = await asyncpg.connect(database.url)
    try:  # connected again an hour ago, after the deauthorization of yesterday
        await conn.execute(
            "UPDATE instagram_accounts SET connected_at = now() - interval '1 hour' WHERE id = $1",
            account.id,
        )
    finally:
        await conn.close()
    stale = payload(account.ig_user_id, issued_at=int(time.time()) - 86400)
    response = await post(client, "/meta/instagram/deauthorize", sign(stale, IG_SECRET))
    assert response.status_code == 200
    assert response.json() == {"expanded": True, "disconnects": 0, "skipped_reconnected": 1}
    assert (await client.get("/v1/deletion-requests", headers=auth())).json()["items"] == []


async def test_deauthorize_of_an_unknown_person_is_a_no_op(
    client: httpx.AsyncClient, state: AppState
) -> None:
    response = await post(client, "/meta/deauthorize", sign(payload("123"), FB_SECRET))
    assert response.status_code == 200
    assert response.json()["disconnects"] == 0
    assert await count_requests(state) == 0


async def test_bad_deauthorize_signature_is_400(client: httpx.AsyncClient, state: AppState) -> None:
    response = await post(client, "/meta/deauthorize", sign(payload(), IG_SECRET))
    assert response.status_code == 400
    assert await count_requests(state) == 0
    assert await count_rows(state, MetaDeauthorization) == 0


# --- replays -----------------------------------------------------------------------------


def _spare_bit_flipped(signature: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(signature) % 4 == 3  # 32 bytes: 43 characters, 2 spare bits in the last
    return signature[:-1] + alphabet[alphabet.index(signature[-1]) ^ 1]


SPELLINGS = {
    "sig+'='": lambda sig: sig + "=",
    "sig+'=='": lambda sig: sig + "==",
    "spare bit flipped": _spare_bit_flipped,
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
async def test_a_re_encoded_replay_after_completion_is_the_same_request_or_refused(
    client: httpx.AsyncClient, state: AppState, spelling: str
) -> None:
    value = sign(payload(), FB_SECRET)
    first = await post(client, "/meta/data-deletion", value)
    assert first.status_code == 200, first.text
    code = first.json()["confirmation_code"]
    (request_id,) = await request_ids(state)
    # Carried out: no open request for the subject is left to fall back on.
    assert await run_until_settled(state, [request_id]) == {request_id: "completed"}
    signature, body = _segments(value)
    replay = await post(client, "/meta/data-deletion", f"{SPELLINGS[spelling](signature)}.{body}")
    if replay.status_code == 200:
        assert replay.json()["confirmation_code"] == code
    else:
        assert replay.status_code == 400, replay.text
        assert replay.headers["content-type"] == "application/problem+json"
    assert await request_ids(state) == [request_id]
    same = await post(client, "/meta/data-deletion", value)
    assert same.json()["confirmation_code"] == code
    assert await request_ids(state) == [request_id]


@pytest.mark.parametrize(
    ("case", "offset"),
    [("eight days old", -8 * 86400), ("a year old", -365 * 86400), ("an hour ahead", 3600)],
)
@pytest.mark.parametrize(
    ("path", "secret"), [("/meta/data-deletion", FB_SECRET), ("/meta/deauthorize", FB_SECRET)]
)
async def test_a_stale_or_future_signed_request_is_400_and_changes_nothing(
    client: httpx.AsyncClient,
    state: AppState,
    world: World,
    path: str,
    secret: bytes,
    case: str,
    offset: int,
) -> None:
    user = world.tenants["alpha"].accounts[0].facebook_user_id
    value = sign(payload(user, issued_at=int(time.time()) + offset), secret)
    response = await post(client, path, value)
    assert response.status_code == 400, (case, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Invalid signed_request"
    assert await count_requests(state) == 0
    assert await count_rows(state, MetaDeauthorization) == 0


async def test_a_max_age_of_zero_accepts_any_age_but_not_the_future(tracking_url: str) -> None:
    from app.main import create_app
    from tests.app_fixtures import make_settings

    app = create_app(
        make_settings(tracking_url, meta_app_secret=FB_SECRET.decode(), meta_max_age_seconds=0)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            old = sign(payload(issued_at=int(time.time()) - 400 * 86400), FB_SECRET)
            assert (await post(client, "/meta/data-deletion", old)).status_code == 200
            ahead = sign(payload("42", issued_at=int(time.time()) + 3600), FB_SECRET)
            assert (await post(client, "/meta/data-deletion", ahead)).status_code == 400
        assert await count_requests(app.state.services) == 1


async def request_ids(state: AppState) -> list[str]:
    async with state.sessionmaker() as session:
        return [str(i) for i in (await session.execute(sa.select(DeletionRequest.id))).scalars()]


async def count_rows(state: AppState, model: Any) -> int:
    async with state.sessionmaker() as session:
        return int(await session.scalar(sa.select(sa.func.count()).select_from(model)) or 0)
