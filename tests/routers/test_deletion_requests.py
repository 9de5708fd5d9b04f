"""REST intake: validation, idempotency, dedupe, listing, cancel."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.models import DeletionRequest, utcnow
from app.state import AppState
from tests.app_fixtures import PUBLIC_BASE_URL

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"


def account(**subject: Any) -> dict[str, Any]:
    return {"kind": "account", "subject": subject}


def unique_site() -> str:
    return f"site-{uuid.uuid4().hex[:10]}"


VALID = [
    account(tenant_id=str(uuid.uuid4())),
    account(site_name="the-band"),
    account(owner_email="Owner@Example.com"),
    {"kind": "meta_data", "subject": {"facebook_user_id": "10215554443332"}},
    {"kind": "meta_data", "subject": {"ig_user_id": "17841400000000001"}},
    {"kind": "meta_data", "subject": {"ig_username": "@Some.Artist_1"}},
    {"kind": "meta_data", "subject": {"facebook_page_name": "  Café  del Mar "}},
    {
        "kind": "instagram_disconnect",
        "subject": {"tenant_id": str(uuid.uuid4()), "instagram_account_id": str(uuid.uuid4())},
    },
]

INVALID = [
    ("no subject", {"kind": "account"}),
    ("empty subject", account()),
    ("two identities", account(site_name="a", owner_email="a@example.com")),
    ("bad uuid", account(tenant_id="not-a-uuid")),
    ("bad email", account(owner_email="not-an-email")),
    ("unknown identity", account(username="x")),
    ("meta: account identity", {"kind": "meta_data", "subject": {"tenant_id": str(uuid.uuid4())}}),
    ("meta: non-numeric id", {"kind": "meta_data", "subject": {"facebook_user_id": "abc"}}),
    ("meta: bad username", {"kind": "meta_data", "subject": {"ig_username": "no spaces"}}),
    ("meta: two", {"kind": "meta_data", "subject": {"ig_user_id": "1", "ig_username": "a"}}),
    (
        "disconnect: one id only",
        {"kind": "instagram_disconnect", "subject": {"tenant_id": str(uuid.uuid4())}},
    ),
    ("unknown kind", {"kind": "everything", "subject": {"tenant_id": str(uuid.uuid4())}}),
    ("bad source", {**account(site_name="x"), "source": "carrier-pigeon"}),
    ("extra field", {**account(site_name="x"), "priority": "high"}),
]


@pytest.mark.parametrize("body", VALID, ids=lambda b: f"{b['kind']}-{next(iter(b['subject']))}")
async def test_valid_subjects_are_accepted(
    client: httpx.AsyncClient, auth: Auth, body: dict[str, Any]
) -> None:
    response = await client.post(URL, json=body, headers=auth("deletions:write"))
    assert response.status_code == 202, response.text
    data = response.json()
    assert data["kind"] == body["kind"]
    assert data["status"] == "pending"
    assert data["requested_by"] == "backend"
    assert data["source"] == "api"
    code = data["confirmation_code"]
    assert code.isalnum() and len(code) >= 20
    assert data["status_url"] == f"{PUBLIC_BASE_URL}/deletion-status/{code}"
    assert data["completed_at"] is None
    assert {t["status"] for t in data["tasks"]} == {"pending"}


@pytest.mark.parametrize(("case", "body"), INVALID, ids=[c for c, _ in INVALID])
async def test_invalid_subjects_get_422_and_file_nothing(
    client: httpx.AsyncClient, auth: Auth, state: AppState, case: str, body: dict[str, Any]
) -> None:
    response = await client.post(URL, json=body, headers=auth("deletions:write"))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["errors"]
    for value in _leaf_strings(body.get("subject", {})):
        assert value not in response.text, f"{case}: input echoed in the error"
    async with state.sessionmaker() as session:
        count = await session.scalar(sa.select(sa.func.count()).select_from(DeletionRequest))
    assert count == 0


def _leaf_strings(subject: dict[str, Any]) -> list[str]:
    return [v for v in subject.values() if isinstance(v, str) and len(v) > 2]


@pytest.mark.parametrize("kind", ["everything", "owner@example.com", 5])
async def test_an_unknown_kind_names_the_allowed_kinds_and_not_the_input(
    client: httpx.AsyncClient, auth: Auth, kind: object
) -> None:
    response = await client.post(
        URL, json={"kind": kind, "subject": {"site_name": "x"}}, headers=auth("deletions:write")
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "kind"]
    assert error["msg"] == "kind must be one of 'account', 'meta_data', 'instagram_disconnect'"
    assert str(kind) not in response.text


async def test_a_missing_kind_is_named(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.post(
        URL, json={"subject": {"site_name": "x"}}, headers=auth("deletions:write")
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "kind"] and error["msg"].startswith("Field required")


async def test_malformed_json_is_a_problem(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.post(
        URL,
        content=b'{"kind": "account", "subject": ',
        headers={**auth("deletions:write"), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["title"] == "Request validation failed"


async def test_normalised_identities_dedupe(client: httpx.AsyncClient, auth: Auth) -> None:
    first = await client.post(
        URL,
        json={"kind": "meta_data", "subject": {"ig_username": "@Some.Artist"}},
        headers=auth("deletions:write"),
    )
    second = await client.post(
        URL,
        json={"kind": "meta_data", "subject": {"ig_username": "some.artist"}},
        headers=auth("deletions:write"),
    )
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]


async def test_open_request_for_same_subject_is_returned_not_duplicated(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    body = account(site_name=unique_site())
    first = await client.post(URL, json=body, headers=auth("deletions:write"))
    again = await client.post(URL, json=body, headers=auth("deletions:write", subject="other"))
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    other_kind = await client.post(
        URL,
        json={"kind": "meta_data", "subject": {"facebook_page_name": body["subject"]["site_name"]}},
        headers=auth("deletions:write"),
    )
    assert other_kind.status_code == 202


async def test_after_cancel_a_new_request_can_be_filed(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    body = account(site_name=unique_site())
    first = (await client.post(URL, json=body, headers=auth("deletions:write"))).json()
    cancel = await client.post(f"{URL}/{first['id']}/cancel", headers=auth("deletions:admin"))
    assert cancel.status_code == 200
    second = await client.post(URL, json=body, headers=auth("deletions:write"))
    assert second.status_code == 202
    assert second.json()["id"] != first["id"]


async def test_idempotency_key_replay_returns_the_same_request(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    body = account(site_name=unique_site())
    headers = {**auth("deletions:write"), "Idempotency-Key": "key-1"}
    first = await client.post(URL, json=body, headers=headers)
    replay = await client.post(URL, json=body, headers=headers)
    assert (first.status_code, replay.status_code) == (202, 200)
    assert replay.json() == first.json()


async def test_idempotency_key_survives_cancel(client: httpx.AsyncClient, auth: Auth) -> None:
    body = account(site_name=unique_site())
    headers = {**auth("deletions:admin"), "Idempotency-Key": "key-2"}
    first = (await client.post(URL, json=body, headers=headers)).json()
    await client.post(f"{URL}/{first['id']}/cancel", headers=headers)
    replay = await client.post(URL, json=body, headers=headers)
    assert replay.status_code == 200
    assert replay.json()["id"] == first["id"]
    assert replay.json()["status"] == "cancelled"


async def test_idempotency_key_with_another_body_is_a_conflict(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    headers = {**auth("deletions:write"), "Idempotency-Key": "key-3"}
    first = await client.post(URL, json=account(site_name=unique_site()), headers=headers)
    assert first.status_code == 202
    other = await client.post(URL, json=account(site_name=unique_site()), headers=headers)
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"


async def test_idempotency_keys_are_per_caller(client: httpx.AsyncClient, auth: Auth) -> None:
    a = await client.post(
        URL,
        json=account(site_name=unique_site()),
        headers={**auth("deletions:write", subject="a"), "Idempotency-Key": "same"},
    )
    b = await client.post(
        URL,
        json=account(site_name=unique_site()),
        headers={**auth("deletions:write", subject="b"), "Idempotency-Key": "same"},
    )
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.json()["id"] != b.json()["id"]


async def test_due_at_is_thirty_days_after_creation(client: httpx.AsyncClient, auth: Auth) -> None:
    data = (await client.post(URL, json=account(site_name=unique_site()), headers=auth())).json()
    created = _parse(data["created_at"])
    assert _parse(data["due_at"]) - created == timedelta(days=30)
    assert abs((utcnow() - created).total_seconds()) < 60


def _parse(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_get_returns_the_request_with_its_tasks(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    created = (await client.post(URL, json=account(site_name=unique_site()), headers=auth())).json()
    response = await client.get(f"{URL}/{created['id']}", headers=auth("deletions:read"))
    assert response.status_code == 200
    assert response.json() == created
    assert [t["purger"] for t in created["tasks"]] == ["meta_graph", "postgres", "mongodb", "s3"]


async def test_disconnect_plan_does_not_touch_s3(client: httpx.AsyncClient, auth: Auth) -> None:
    body = {
        "kind": "instagram_disconnect",
        "subject": {"tenant_id": str(uuid.uuid4()), "instagram_account_id": str(uuid.uuid4())},
    }
    data = (await client.post(URL, json=body, headers=auth())).json()
    # The PostgreSQL step first: a disconnect cuts at once, whatever Meta answers (#16).
    assert [t["purger"] for t in data["tasks"]] == ["postgres", "meta_graph", "mongodb"]


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient, auth: Auth) -> None:
    missing = await client.get(f"{URL}/{uuid.uuid4()}", headers=auth())
    assert missing.status_code == 404
    assert missing.json()["title"] == "Not found"
    malformed = await client.get(f"{URL}/not-a-uuid", headers=auth())
    assert malformed.status_code == 422


async def test_list_is_newest_first_and_pages_with_a_cursor(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    ids = []
    for _ in range(7):
        created = await client.post(URL, json=account(site_name=unique_site()), headers=auth())
        ids.append(created.json()["id"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(URL, params=params, headers=auth("deletions:read"))).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))


async def test_list_filters_by_status_kind_and_overdue(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    a = (await client.post(URL, json=account(site_name=unique_site()), headers=auth())).json()
    b = (
        await client.post(
            URL, json={"kind": "meta_data", "subject": {"ig_user_id": "42"}}, headers=auth()
        )
    ).json()
    await client.post(f"{URL}/{a['id']}/cancel", headers=auth())

    async def ids(**params: Any) -> set[str]:
        page = (await client.get(URL, params=params, headers=auth())).json()
        return {item["id"] for item in page["items"]}

    assert await ids(status="cancelled") == {a["id"]}
    assert await ids(status="pending") == {b["id"]}
    assert await ids(kind="meta_data") == {b["id"]}
    assert await ids(overdue="true") == set()
    async with state.sessionmaker() as session:
        await session.execute(
            sa.update(DeletionRequest)
            .where(DeletionRequest.id.in_([uuid.UUID(a["id"]), uuid.UUID(b["id"])]))
            .values(due_at=utcnow() - timedelta(days=1))
        )
        await session.commit()
    # Only open requests can be overdue: the cancelled one is not.
    assert await ids(overdue="true") == {b["id"]}


async def test_invalid_cursor_and_filters_are_422(client: httpx.AsyncClient, auth: Auth) -> None:
    for params in ({"cursor": "garbage!"}, {"status": "done"}, {"limit": 0}, {"limit": 1000}):
        response = await client.get(URL, params=params, headers=auth())
        assert response.status_code == 422, params


async def test_cancel_only_from_pending(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    created = (await client.post(URL, json=account(site_name=unique_site()), headers=auth())).json()
    async with state.sessionmaker() as session:
        await session.execute(
            sa.update(DeletionRequest)
            .where(DeletionRequest.id == uuid.UUID(created["id"]))
            .values(status="running")
        )
        await session.commit()
    response = await client.post(f"{URL}/{created['id']}/cancel", headers=auth("deletions:admin"))
    assert response.status_code == 409
    assert "running" in response.json()["detail"]
    current = (await client.get(f"{URL}/{created['id']}", headers=auth())).json()
    assert current["status"] == "running"


async def test_cancel_records_the_reason_and_an_event(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    from app.repository import list_events

    created = (await client.post(URL, json=account(site_name=unique_site()), headers=auth())).json()
    response = await client.post(
        f"{URL}/{created['id']}/cancel",
        json={"reason": "filed by mistake"},
        headers=auth("deletions:admin", subject="ops-alice"),
    )
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["status_reason"] == "filed by mistake"
    async with state.sessionmaker() as session:
        events = await list_events(session, uuid.UUID(created["id"]))
    assert [(e.type, e.actor) for e in events] == [
        ("created", "backend"),
        ("cancelled", "ops-alice"),
    ]
    again = await client.post(f"{URL}/{created['id']}/cancel", headers=auth("deletions:admin"))
    assert again.status_code == 409
    unknown = await client.post(f"{URL}/{uuid.uuid4()}/cancel", headers=auth("deletions:admin"))
    assert unknown.status_code == 404
