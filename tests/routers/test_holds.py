"""Legal holds (`/v1/holds`): scopes, bodies, whom a hold holds (and whom it never does),
requests that wait in `on_hold` and resume on release, the status page, the metrics and
what a released hold keeps. On both tracking stores, with the scripted purgers."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.models import DeletionRequest, LegalHold, LegalHoldHash, utcnow
from app.repository import deadline_candidates, list_events
from app.services.identities import lookup_hash
from app.state import AppState
from app.wiring import new_engine
from tests.app_fixtures import HASH_KEY
from tests.engine_support import Script, new_script
from tests.routers.test_metrics import scrape, value

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"
HOLDS = "/v1/holds"
REASON = "Litigation hold, case 2026-CV-0042 (Jane Roe v. SoundOps)"


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return new_script(tmp_path, default=["ok"])


@pytest.fixture
def settings_overrides(script: Script) -> dict[str, Any]:
    return {"testing_purgers": script.path, "retry_base_seconds": 3600}


async def file(client: httpx.AsyncClient, auth: Auth, kind: str, **subject: str) -> dict[str, Any]:
    response = await client.post(
        URL, json={"kind": kind, "subject": subject}, headers=auth("deletions:write")
    )
    assert response.status_code in (200, 202), response.text
    data: dict[str, Any] = response.json()
    return data


async def hold(client: httpx.AsyncClient, auth: Auth, **subject: str) -> dict[str, Any]:
    response = await client.post(
        HOLDS, json={"subject": subject, "reason": REASON}, headers=auth("deletions:admin")
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def status_of(client: httpx.AsyncClient, auth: Auth, request_id: str) -> str:
    data = (await client.get(f"{URL}/{request_id}", headers=auth())).json()
    return str(data["status"])


async def events(state: AppState, request_id: str) -> list[str]:
    async with state.sessionmaker() as session:
        return [e.type for e in await list_events(session, uuid.UUID(request_id))]


async def run_once(state: AppState) -> str | None:
    """One worker's turn: claim the next due request and carry it out; its id, or None
    when there was nothing a worker may claim."""
    engine = new_engine(state)
    claim = await engine.claim()
    if claim is None:
        return None
    await engine.run_claimed(claim.request_id)
    return str(claim.request_id)


# --- the endpoints -----------------------------------------------------------------


async def test_holds_need_the_admin_scope(client: httpx.AsyncClient, auth: Auth) -> None:
    body = {"subject": {"site_name": "scoped-band"}, "reason": REASON}
    some_id = uuid.uuid4()
    calls = [
        ("POST", HOLDS, body),
        ("GET", HOLDS, None),
        ("GET", f"{HOLDS}/{some_id}", None),
        ("DELETE", f"{HOLDS}/{some_id}", None),
    ]
    for method, path, json in calls:
        anonymous = await client.request(method, path, json=json)
        assert anonymous.status_code == 401, (method, path)
        for scopes in (("deletions:write",), ("deletions:read", "deletions:write")):
            denied = await client.request(method, path, json=json, headers=auth(*scopes))
            assert denied.status_code == 403, (method, path, scopes)
            assert denied.headers["content-type"] == "application/problem+json"
    listed = await client.get(HOLDS, headers=auth("deletions:admin"))
    assert listed.json() == {"items": [], "next_cursor": None}


async def test_place_list_read_and_release_a_hold(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    placed = await hold(client, auth, site_name="held-band", owner_email="Owner@Held.Example")
    assert placed["subject"] == {"site_name": "held-band", "owner_email": "owner@held.example"}
    assert placed["reason"] == REASON
    assert placed["created_by"] == "backend"
    assert placed["released_at"] is None and placed["held_requests"] == 0
    admin = auth("deletions:admin")

    listed = (await client.get(HOLDS, headers=admin)).json()
    assert [item["id"] for item in listed["items"]] == [placed["id"]]
    one = (await client.get(f"{HOLDS}/{placed['id']}", headers=admin)).json()
    assert one["subject"] == placed["subject"] and one["reason"] == REASON

    released = await client.delete(f"{HOLDS}/{placed['id']}", headers=admin)
    assert released.status_code == 204 and released.content == b""
    assert (await client.get(HOLDS, headers=admin)).json()["items"] == []
    audit = (await client.get(HOLDS, params={"include_released": "true"}, headers=admin)).json()
    (item,) = audit["items"]
    assert item["released_by"] == "backend" and item["released_at"] is not None
    assert item["reason"] is None

    again = await client.delete(f"{HOLDS}/{placed['id']}", headers=admin)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert "released already" in again.json()["detail"]
    unknown = await client.delete(f"{HOLDS}/{uuid.uuid4()}", headers=admin)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"{HOLDS}/{uuid.uuid4()}", headers=admin)).status_code == 404
    assert (await client.delete(f"{HOLDS}/not-a-uuid", headers=admin)).status_code == 422


async def test_the_hold_list_pages_with_a_cursor(client: httpx.AsyncClient, auth: Auth) -> None:
    placed = [(await hold(client, auth, site_name=f"paged-band-{i}"))["id"] for i in range(3)]
    admin = auth("deletions:admin")
    first = (await client.get(HOLDS, params={"limit": 2}, headers=admin)).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = (
        await client.get(HOLDS, params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin)
    ).json()
    assert second["next_cursor"] is None
    seen = [item["id"] for item in first["items"] + second["items"]]
    assert seen == list(reversed(placed))
    bad = await client.get(HOLDS, params={"cursor": "garbage!"}, headers=admin)
    assert bad.status_code == 422


BAD_BODIES = [
    ("empty body", {}),
    ("no reason", {"subject": {"site_name": "some-band"}}),
    ("empty reason", {"subject": {"site_name": "some-band"}, "reason": ""}),
    ("empty subject", {"subject": {}, "reason": REASON}),
    ("unknown identity", {"subject": {"username": "secret-person"}, "reason": REASON}),
    ("bad uuid", {"subject": {"tenant_id": "secret-person"}, "reason": REASON}),
    ("bad username", {"subject": {"ig_username": "secret person"}, "reason": REASON}),
    ("bad email", {"subject": {"owner_email": "secret-person"}, "reason": REASON}),
    ("non-numeric id", {"subject": {"ig_user_id": "secret-person"}, "reason": REASON}),
    ("subject not an object", {"subject": "secret-person", "reason": REASON}),
    ("extra field", {"subject": {"site_name": "some-band"}, "reason": REASON, "until": "x"}),
    ("reason too long", {"subject": {"site_name": "some-band"}, "reason": "x" * 2001}),
]


@pytest.mark.parametrize(("case", "body"), BAD_BODIES, ids=[c for c, _ in BAD_BODIES])
async def test_bad_hold_bodies_are_precise_problems_and_hold_nothing(
    client: httpx.AsyncClient, auth: Auth, state: AppState, case: str, body: dict[str, Any]
) -> None:
    pending = await file(client, auth, "account", site_name="some-band")
    response = await client.post(HOLDS, json=body, headers=auth("deletions:admin"))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["errors"], case
    assert all(error["loc"][0] == "body" for error in problem["errors"])
    assert "secret" not in response.text, f"{case}: input echoed in the error"
    async with state.sessionmaker() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(LegalHold)) == 0
    assert await status_of(client, auth, pending["id"]) == "pending"


# --- whom a hold holds -----------------------------------------------------------------


async def test_a_held_subjects_requests_wait_and_run_once_released(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    before = await file(client, auth, "meta_data", ig_username="held.person")
    placed = await hold(client, auth, ig_username="@Held.Person")  # the one normalisation
    assert placed["held_requests"] == 1
    assert await status_of(client, auth, before["id"]) == "on_hold"
    assert "held" in await events(state, before["id"])

    # A new request of the held subject is filed on hold (another kind, same identity).
    after = await client.post(
        URL,
        json={"kind": "meta_data", "subject": {"ig_username": "HELD.PERSON"}},
        headers=auth("deletions:write"),
    )
    assert after.status_code == 200 and after.json()["id"] == before["id"]  # the open one
    # The worker never claims a request on hold.
    assert await run_once(state) is None
    assert script.starts(before["id"]) == []

    # Not overdue while held: neither the filter nor the deadline sweep sees it.
    async with state.sessionmaker() as session:
        await session.execute(
            sa.update(DeletionRequest)
            .where(DeletionRequest.id == uuid.UUID(before["id"]))
            .values(due_at=utcnow() - timedelta(days=1))
        )
        await session.commit()
        near, overdue = await deadline_candidates(session, utcnow(), timedelta(days=3))
    assert uuid.UUID(before["id"]) not in {*near, *overdue}
    page = (await client.get(URL, params={"overdue": "true"}, headers=auth())).json()
    assert page["items"] == []
    held = (await client.get(URL, params={"status": "on_hold"}, headers=auth())).json()
    assert [item["id"] for item in held["items"]] == [before["id"]]

    # Cancel and retry are for pending and failed requests: a held one is neither.
    cancel = await client.post(f"{URL}/{before['id']}/cancel", headers=auth("deletions:admin"))
    assert cancel.status_code == 409 and "on_hold" in cancel.json()["detail"]
    retry = await client.post(f"{URL}/{before['id']}/retry", headers=auth("deletions:admin"))
    assert retry.status_code == 409
    receipt = await client.get(f"{URL}/{before['id']}/receipt", headers=auth())
    assert receipt.status_code == 409

    released = await client.delete(f"{HOLDS}/{placed['id']}", headers=auth("deletions:admin"))
    assert released.status_code == 204
    assert await status_of(client, auth, before["id"]) == "pending"
    assert (await events(state, before["id"]))[-1] == "resumed"
    assert await run_once(state) == before["id"]
    assert await status_of(client, auth, before["id"]) == "completed"
    assert {c["purger"] for c in script.starts(before["id"])} == {
        "meta_graph",
        "postgres",
        "mongodb",
        "s3",
    }


async def test_a_request_filed_for_a_held_subject_waits_from_the_start(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    tenant = str(uuid.uuid4())
    await hold(client, auth, tenant_id=tenant)
    disconnect = await client.post(
        URL,
        json={
            "kind": "instagram_disconnect",
            "subject": {"tenant_id": tenant, "instagram_account_id": str(uuid.uuid4())},
        },
        headers=auth("deletions:write"),
    )
    assert disconnect.status_code == 202
    assert disconnect.json()["status"] == "on_hold"
    assert await events(state, disconnect.json()["id"]) == ["created", "held"]
    assert await run_once(state) is None
    assert script.starts() == []


async def test_a_hold_never_holds_another_subjects_requests(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    tenant_a, tenant_b = str(uuid.uuid4()), str(uuid.uuid4())
    await hold(client, auth, tenant_id=tenant_a)
    await hold(client, auth, ig_username="x")
    await hold(client, auth, site_name="the-band")
    held = [
        await file(client, auth, "account", tenant_id=tenant_a),
        await file(client, auth, "meta_data", ig_username="X"),
        await file(client, auth, "account", site_name="the-band"),
    ]
    free = [
        await file(client, auth, "account", tenant_id=tenant_b),
        await file(
            client,
            auth,
            "instagram_disconnect",
            tenant_id=tenant_b,
            instagram_account_id=str(uuid.uuid4()),
        ),
        await file(client, auth, "meta_data", ig_username="xy"),  # not a prefix match
        await file(client, auth, "meta_data", ig_username="x_"),
        await file(client, auth, "account", site_name="the-band-2"),
        await file(client, auth, "account", site_name="the band"),
        # The same value under another identity is another subject.
        await file(client, auth, "meta_data", facebook_page_name="the-band"),
    ]
    assert [r["status"] for r in held] == ["on_hold"] * 3
    assert [r["status"] for r in free] == ["pending"] * len(free)
    ran = {await run_once(state) for _ in range(len(free) + 1)}
    assert ran == {r["id"] for r in free} | {None}
    for request in free:
        assert await status_of(client, auth, request["id"]) == "completed"
    for request in held:
        assert await status_of(client, auth, request["id"]) == "on_hold"
        assert script.starts(request["id"]) == []


async def test_a_request_waiting_for_a_retry_is_held_and_resumes_with_its_counts(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    script.write(purgers={"mongodb": {"default": ["transient", "ok"]}})
    request = await file(client, auth, "account", site_name="retrying-band")
    assert await run_once(state) == request["id"]
    waiting = (await client.get(f"{URL}/{request['id']}", headers=auth())).json()
    assert waiting["status"] == "running"  # between attempts, no worker holds it
    tasks = {t["purger"]: t["status"] for t in waiting["tasks"]}
    assert tasks["mongodb"] == "retrying" and tasks["postgres"] == "succeeded"

    placed = await hold(client, auth, site_name="retrying-band")
    assert placed["held_requests"] == 1
    held = (await client.get(f"{URL}/{request['id']}", headers=auth())).json()
    assert held["status"] == "on_hold"
    assert held["tasks"] == waiting["tasks"]  # what ran stays recorded, nothing reported done
    assert held["completed_at"] is None

    await client.delete(f"{HOLDS}/{placed['id']}", headers=auth("deletions:admin"))
    assert await status_of(client, auth, request["id"]) == "pending"


async def test_a_request_made_pending_by_another_way_is_held_before_its_first_task(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    """A retry (like a confirmation or an approval) makes a request pending without intake:
    the runner's look before every attempt holds it."""
    script.write(purgers={"mongodb": {"default": ["permanent"]}})
    request = await file(client, auth, "account", site_name="failing-band")
    await run_once(state)
    assert await status_of(client, auth, request["id"]) == "failed"
    starts = len(script.starts(request["id"]))
    await hold(client, auth, site_name="failing-band")
    script.write(default=["ok"])
    retried = await client.post(f"{URL}/{request['id']}/retry", headers=auth("deletions:admin"))
    assert retried.json()["status"] == "pending"

    assert await run_once(state) == request["id"]
    assert await status_of(client, auth, request["id"]) == "on_hold"
    assert len(script.starts(request["id"])) == starts  # no attempt started
    assert (await events(state, request["id"]))[-1] == "held"


async def test_a_request_stays_held_until_its_last_hold_is_released(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    tenant = str(uuid.uuid4())
    request = await file(client, auth, "account", tenant_id=tenant)
    first = await hold(client, auth, tenant_id=tenant)
    second = await hold(client, auth, tenant_id=tenant, site_name="another-name")
    await client.delete(f"{HOLDS}/{first['id']}", headers=auth("deletions:admin"))
    assert await status_of(client, auth, request["id"]) == "on_hold"
    await client.delete(f"{HOLDS}/{second['id']}", headers=auth("deletions:admin"))
    assert await status_of(client, auth, request["id"]) == "pending"


# --- what it shows, and what it keeps ----------------------------------------------------


async def test_the_status_page_says_on_hold_and_never_why(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    request = await file(client, auth, "meta_data", ig_username="page.person")
    await hold(client, auth, ig_username="page.person")
    page = await client.get(f"/deletion-status/{request['confirmation_code']}")
    assert page.status_code == 200
    assert "On hold" in page.text
    for secret in ("Litigation", "2026-CV-0042", "Jane Roe", "page.person", "hold, case"):
        assert secret not in page.text
    as_json = await client.get(
        f"/deletion-status/{request['confirmation_code']}", headers={"Accept": "application/json"}
    )
    assert as_json.json()["status"] == "on_hold"
    assert "Litigation" not in as_json.text and "page.person" not in as_json.text


async def test_metrics_show_the_holds_and_the_requests_on_hold(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    request = await file(client, auth, "account", site_name="metrics-held-band")
    placed = await hold(client, auth, site_name="metrics-held-band")
    async with state.sessionmaker() as session:  # placed a day ago
        await session.execute(
            sa.update(LegalHold)
            .where(LegalHold.id == uuid.UUID(placed["id"]))
            .values(created_at=utcnow() - timedelta(days=1))
        )
        await session.commit()
    samples = await scrape(client)
    assert value(samples, "deletion_holds_active") == 1
    assert value(samples, "deletion_hold_oldest_seconds") >= 86400
    assert value(samples, "deletion_requests", kind="account", status="on_hold") == 1
    assert value(samples, "deletion_requests_overdue") == 0

    await client.delete(f"{HOLDS}/{placed['id']}", headers=auth("deletions:admin"))
    samples = await scrape(client)
    assert value(samples, "deletion_holds_active") == 0
    assert value(samples, "deletion_hold_oldest_seconds") == 0
    assert value(samples, "deletion_requests", kind="account", status="on_hold") == 0
    assert value(samples, "deletion_requests", kind="account", status="pending") == 1
    assert request["id"]


async def test_a_released_hold_keeps_only_keyed_hashes(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    tenant = str(uuid.uuid4())
    placed = await hold(client, auth, tenant_id=tenant, owner_email="private@person.example")
    await client.delete(f"{HOLDS}/{placed['id']}", headers=auth("deletions:admin"))

    async with state.tracking_db.connect() as conn:
        rows = [
            repr(tuple(row))
            for table in (LegalHold.__table__, LegalHoldHash.__table__)
            for row in (await conn.execute(sa.select(table))).all()
        ]
    dump = "\n".join(rows)
    for raw in (tenant, "private@person.example", "Litigation", "Jane Roe"):
        assert raw not in dump
    audit = (await client.get(HOLDS, params={"include_released": "true"}, headers=auth())).json()[
        "items"
    ][0]
    # Still findable by whom it held, as a minimised request is.
    key = HASH_KEY.encode()
    assert audit["subject"] == {
        "tenant_id": "hmac-sha256:" + lookup_hash(key, f"tenant_id={tenant}"),
        "owner_email": "hmac-sha256:" + lookup_hash(key, "owner_email=Private@Person.example"),
    }
