"""The operators' console (`/admin`) over HTTP: sign-in into a cookie session, the pages,
the forms (approve choosing a candidate, reject, retry, cancel) and their CSRF checks,
against the app with the real tracking store and the SoundOps database for approvals."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.admin_session import COOKIE
from app.repository import list_events
from app.services.intake.email.filing import FiledEmailRequest, file_email_request
from app.state import AppState
from app.subjects import Review, ReviewCandidate
from tests.app_fixtures import bearer, mint
from tests.engine_support import Script, new_script, run_until_settled
from testsupport.seed import add_tenant

ADMIN = ("deletions:admin",)
OWNER = "shared-owner@console-bands.example"  # what the message named: personal data
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return new_script(
        tmp_path,
        default=["ok"],
        subjects={"console-failing-band": ["permanent"], "console-slow-band": ["sleep:1.5"]},
    )


@pytest.fixture
def settings_overrides(
    request: pytest.FixtureRequest, script: Script, soundops_db: str
) -> dict[str, Any]:
    marker = request.node.get_closest_marker("settings")
    given = dict(marker.kwargs) if marker else {}
    return {"testing_purgers": script.path, "target_postgres_url": soundops_db, **given}


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client on https (the session cookie is Secure outside development)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as c:
        yield c


async def post_login(
    client: httpx.AsyncClient, token: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """The sign-in form as a browser sends it: fetched first (its CSRF token and nonce
    cookie), then posted."""
    csrf = await csrf_of(client, "/admin/login")
    return await client.post(
        "/admin/login", data={"token": token, "csrf": csrf}, headers=headers or {}
    )


def session_cookie(answer: httpx.Response) -> str | None:
    found = [c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}=")]
    return found[0] if found else None


async def sign_in(client: httpx.AsyncClient, **claims: Any) -> httpx.Response:
    answer = await post_login(client, mint(ADMIN, **claims))
    assert answer.status_code == 303, answer.text
    return answer


async def csrf_of(client: httpx.AsyncClient, page: str) -> str:
    answer = await client.get(page)
    assert answer.status_code == 200, answer.text
    found = CSRF.search(answer.text)
    assert found is not None
    return found.group(1)


async def file_in_review(
    state: AppState,
    message_id: str,
    *,
    reason: str,
    review: Review | None = None,
    owner: str = OWNER,
) -> FiledEmailRequest:
    async with state.sessionmaker() as session:
        return await file_email_request(
            session,
            kind="account",
            subject={"owner_email": owner},
            status="needs_review",
            review_reason=reason,
            message_id=message_id,
            recipients=[],
            settings=state.settings,
            review=review,
        )


async def create(client: httpx.AsyncClient, site: str) -> str:
    answer = await client.post(
        "/v1/deletion-requests",
        json={"kind": "account", "subject": {"site_name": site}},
        headers=bearer(mint()),
    )
    assert answer.status_code == 202, answer.text
    request_id: str = answer.json()["id"]
    return request_id


async def test_without_a_session_every_page_answers_303_to_sign_in(
    browser: httpx.AsyncClient,
) -> None:
    some = uuid.uuid4()
    pages = ["/admin", "/admin/requests", f"/admin/requests/{some}", "/admin/requests/nope"]
    for cookie in (None, "not-a-jwt", mint(ADMIN, ttl=-120)):
        browser.cookies.clear()
        if cookie is not None:
            browser.cookies.set(COOKIE, cookie, domain="testserver", path="/admin")
        for page in pages:
            answer = await browser.get(page)
            assert (answer.status_code, answer.headers["location"]) == (303, "/admin/login"), page
        for form in (f"/admin/requests/{some}/cancel", "/admin/logout"):
            answer = await browser.post(form, data={"csrf": "0" * 64})
            assert (answer.status_code, answer.headers["location"]) == (303, "/admin/login")
    login = await browser.get("/admin/login")
    assert login.status_code == 200
    assert '<label for="token">' in login.text and 'lang="en"' in login.text
    assert login.headers["content-security-policy"].startswith("default-src 'self'")
    assert "frame-ancestors 'none'" in login.headers["content-security-policy"]
    css = await browser.get("/admin/static/admin.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


async def test_sign_in_sets_a_strict_http_only_secure_cookie_that_expires_with_the_token(
    browser: httpx.AsyncClient,
) -> None:
    refused = {
        "not-a-jwt": (401, "invalid"),
        mint(ADMIN, ttl=-120): (401, "expired"),
        mint(ADMIN, secret="another-secret-that-is-long-enough-for-hs256"): (401, "invalid"),
        mint(("deletions:read", "deletions:write")): (403, "deletions:admin"),
        "": (401, "Paste an admin token"),
    }
    for token, (status, says) in refused.items():
        answer = await post_login(browser, token)
        assert answer.status_code == status, token
        assert says in answer.text and 'role="alert"' in answer.text
        assert session_cookie(answer) is None
    assert COOKIE not in browser.cookies
    # The sign-in form has its own CSRF token, bound to its nonce cookie.
    for data in ({"token": mint(ADMIN)}, {"token": mint(ADMIN), "csrf": "0" * 64}):
        answer = await browser.post("/admin/login", data=data)
        assert answer.status_code == 403 and session_cookie(answer) is None

    token = mint(ADMIN, ttl=600)
    answer = await post_login(browser, token)
    assert (answer.status_code, answer.headers["location"]) == (303, "/admin/requests")
    cookie = session_cookie(answer)
    assert cookie is not None
    parts = {p.strip().split("=", 1)[0].lower(): p.strip() for p in cookie.split(";")}
    assert cookie.startswith(f"soundops_admin={token};")
    assert {"httponly", "secure"} <= parts.keys()
    assert parts["samesite"].lower() == "samesite=strict"
    assert parts["path"] == "Path=/admin"
    max_age = int(parts["max-age"].split("=")[1])
    assert 590 <= max_age <= 600
    exp = int(time.time()) + 600
    expires = parsedate_to_datetime(parts["expires"].split("=", 1)[1]).timestamp()
    assert abs(expires - exp) <= 10
    page = await browser.get("/admin/requests")
    assert page.status_code == 200 and "Signed in as backend" in page.text

    csrf = CSRF.search(page.text)
    assert csrf is not None
    out = await browser.post("/admin/logout", data={"csrf": csrf.group(1)})
    assert (out.status_code, out.headers["location"]) == (303, "/admin/login")
    cleared = session_cookie(out)
    assert cleared is not None and cleared.startswith(f'{COOKIE}="";')
    assert "max-age=0" in cleared.lower()
    assert (await browser.get("/admin/requests")).status_code == 303


@pytest.mark.settings(environment="development")
async def test_in_development_the_cookie_is_not_secure(client: httpx.AsyncClient) -> None:
    answer = await post_login(client, mint(ADMIN))
    assert answer.status_code == 303
    cookie = session_cookie(answer)
    assert cookie is not None and "secure" not in cookie.lower()
    assert (await client.get("/admin/requests")).status_code == 200  # over http, too


async def test_the_list_filters_and_pages_with_whole_ids(
    browser: httpx.AsyncClient, state: AppState
) -> None:
    in_review = await file_in_review(state, "<list@x>", reason="no_match")
    first, second = await create(browser, "console-a"), await create(browser, "console-b")
    await sign_in(browser)

    everything = await browser.get("/admin/requests")
    for request_id in (str(in_review.request.id), first, second):
        assert f">{request_id}</a>" in everything.text
    queue = await browser.get("/admin/requests", params={"status": "needs_review"})
    assert f">{in_review.request.id}</a>" in queue.text and first not in queue.text
    assert 'aria-current="page">Review queue' in queue.text
    by_kind = await browser.get("/admin/requests", params={"kind": "meta_data"})
    assert "No request matches." in by_kind.text
    overdue = await browser.get("/admin/requests", params={"overdue": "true"})
    assert "No request matches." in overdue.text  # all due in 30 days
    for quick in ("?status=needs_review", "?overdue=true", "?status=failed"):
        assert f'href="/admin/requests{quick}"' in everything.text

    page_one = await browser.get("/admin/requests", params={"limit": "2"})
    assert f">{second}</a>" in page_one.text and f">{first}</a>" in page_one.text
    assert str(in_review.request.id) not in page_one.text
    link = re.search(r'href="(/admin/requests\?[^"]*cursor=[^"]*)" rel="next"', page_one.text)
    assert link is not None
    page_two = await browser.get(link.group(1).replace("&amp;", "&"))
    assert f">{in_review.request.id}</a>" in page_two.text and first not in page_two.text

    for bad in ({"status": "lost"}, {"kind": "x"}, {"cursor": "garbage"}, {"limit": "0"}):
        answer = await browser.get("/admin/requests", params=bad)
        assert answer.status_code == 422 and 'role="alert"' in answer.text, bad
    missing = await browser.get(f"/admin/requests/{uuid.uuid4()}")
    assert missing.status_code == 404 and "No deletion request" in missing.text


async def test_approve_choosing_a_candidate_pins_that_tenant(
    browser: httpx.AsyncClient, state: AppState, soundops_db: str, capfd: pytest.CaptureFixture[str]
) -> None:
    first = await add_tenant(soundops_db, "console-band-one", OWNER)
    chosen = await add_tenant(soundops_db, "console-band-two", OWNER)
    review = Review(
        named={"owner_email": OWNER},
        candidates=[
            ReviewCandidate(tenant_id=first, site_name="console-band-one"),
            ReviewCandidate(tenant_id=chosen, site_name="console-band-two"),
        ],
    )
    filed = await file_in_review(state, "<approve@x>", reason="several_tenants", review=review)
    request_id = filed.request.id
    await sign_in(browser, subject="ops-anna")
    page = await browser.get(f"/admin/requests/{request_id}")
    assert page.status_code == 200
    text = page.text
    assert OWNER in text  # what was asked and what the message named
    assert "console-band-one" in text and str(chosen) in text  # the candidates
    assert 'value="candidate:1"' in text and 'value="named"' not in text  # a choice is needed
    for control in ('for="choice-0"', 'for="reject-reason"', 'for="cancel-reason"'):
        assert control in text
    csrf = CSRF.search(text)
    assert csrf is not None

    none_chosen = await browser.post(
        f"/admin/requests/{request_id}/approve", data={"csrf": csrf.group(1)}
    )
    assert none_chosen.status_code == 422 and "Choose a candidate" in none_chosen.text
    out_of_range = await browser.post(
        f"/admin/requests/{request_id}/approve",
        data={"csrf": csrf.group(1), "choice": "candidate:7"},
    )
    assert out_of_range.status_code == 422
    invalid = await browser.post(
        f"/admin/requests/{request_id}/approve",
        data={"csrf": csrf.group(1), "choice": "other", "identity": "owner_email", "value": "x"},
    )
    assert invalid.status_code == 422
    assert "not a valid account subject" in invalid.text and "owner_email:" in invalid.text
    named = await browser.post(
        f"/admin/requests/{request_id}/approve", data={"csrf": csrf.group(1), "choice": "named"}
    )
    assert named.status_code == 409 and "matched 2 candidates" in named.text
    assert (await state.requests.get(request_id)).status == "needs_review"

    answer = await browser.post(
        f"/admin/requests/{request_id}/approve",
        data={"csrf": csrf.group(1), "choice": "candidate:1"},
        headers={"Origin": "https://testserver"},
    )
    assert (answer.status_code, answer.headers["location"]) == (
        303,
        f"/admin/requests/{request_id}",
    )
    approved = await state.requests.get(request_id)
    assert approved.status == "pending"
    assert approved.pinned == {"tenant_ids": [str(chosen)], "account_ids": []}
    async with state.sessionmaker() as session:
        events = await list_events(session, request_id)
    assert (events[-1].type, events[-1].actor) == ("approved", "ops-anna")
    shown = await browser.get(f"/admin/requests/{request_id}")
    assert "approved" in shown.text and "by ops-anna" in shown.text
    assert "/approve" not in shown.text  # no longer in review
    again = await browser.post(
        f"/admin/requests/{request_id}/approve",
        data={"csrf": csrf.group(1), "choice": "candidate:1"},
    )
    assert again.status_code == 409 and "only needs_review ones can" in again.text

    logs = capfd.readouterr()
    assert OWNER not in logs.out + logs.err, "a log line names the subject"


async def test_reject_retry_and_cancel(
    browser: httpx.AsyncClient, state: AppState, script: Script
) -> None:
    in_review = await file_in_review(state, "<reject@x>", reason="dmarc_fail")
    failing = await create(browser, "console-failing-band")
    assert await run_until_settled(state, [failing]) == {failing: "failed"}
    pending = await create(browser, "console-pending-band")
    await sign_in(browser)
    csrf = await csrf_of(browser, "/admin/requests")

    rejected = await browser.post(
        f"/admin/requests/{in_review.request.id}/reject",
        data={"csrf": csrf, "reason": "forged sender"},
    )
    assert rejected.status_code == 303
    request = await state.requests.get(in_review.request.id)
    assert (request.status, request.status_reason) == ("cancelled", "forged sender")

    page = await browser.get(f"/admin/requests/{failing}")
    assert (
        "scripted permanent failure" in page.text
        and f"/admin/requests/{failing}/retry" in page.text
    )
    retried = await browser.post(f"/admin/requests/{failing}/retry", data={"csrf": csrf})
    assert retried.status_code == 303
    assert (await state.requests.get(uuid.UUID(failing))).status == "pending"
    again = await browser.post(f"/admin/requests/{failing}/retry", data={"csrf": csrf})
    assert again.status_code == 409
    assert "A pending request cannot be retried; only failed ones can." in again.text
    assert 'role="alert"' in again.text

    cancelled = await browser.post(
        f"/admin/requests/{pending}/cancel", data={"csrf": csrf, "reason": "duplicate ticket"}
    )
    assert cancelled.status_code == 303
    request = await state.requests.get(uuid.UUID(pending))
    assert (request.status, request.status_reason) == ("cancelled", "duplicate ticket")
    unknown = await browser.post(
        f"/admin/requests/{pending}/delete-everything", data={"csrf": csrf}
    )
    assert unknown.status_code == 404


async def test_a_form_without_a_valid_csrf_token_changes_nothing(
    browser: httpx.AsyncClient, app: FastAPI, state: AppState
) -> None:
    pending = await create(browser, "console-csrf-band")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as other:
        await sign_in(other, subject="someone-else")
        foreign = await csrf_of(other, "/admin/requests")
    await sign_in(browser)
    own = await csrf_of(browser, "/admin/requests")
    assert foreign != own

    url = f"/admin/requests/{pending}/cancel"
    attempts: list[tuple[dict[str, str], dict[str, str]]] = [
        ({}, {}),
        ({"csrf": ""}, {}),
        ({"csrf": "0" * 64}, {}),
        ({"csrf": foreign}, {}),  # another session's token
        ({"csrf": own}, {"Origin": "https://evil.example"}),
        ({"csrf": own}, {"Origin": "null"}),
        ({"csrf": own}, {"Referer": "https://evil.example/admin/requests"}),
    ]
    for data, headers in attempts:
        answer = await browser.post(url, data=data, headers=headers)
        assert answer.status_code == 403, (data, headers)
        assert "Form refused" in answer.text
    json_body = await browser.post(url, json={"csrf": own})
    assert json_body.status_code == 403
    assert (await state.requests.get(uuid.UUID(pending))).status == "pending"
    async with state.sessionmaker() as session:
        assert [e.type for e in await list_events(session, uuid.UUID(pending))] == ["created"]

    login = await post_login(browser, mint(ADMIN), headers={"Origin": "https://evil.example"})
    assert login.status_code == 403 and session_cookie(login) is None

    done = await browser.post(url, data={"csrf": own}, headers={"Referer": "https://testserver/x"})
    assert done.status_code == 303
    assert (await state.requests.get(uuid.UUID(pending))).status == "cancelled"


async def test_a_running_request_refreshes_until_it_settles(
    browser: httpx.AsyncClient, state: AppState
) -> None:
    slow = await create(browser, "console-slow-band")
    await sign_in(browser)
    runner = asyncio.create_task(run_until_settled(state, [slow]))
    try:
        while (await state.requests.get(uuid.UUID(slow))).status != "running":
            assert not runner.done(), "settled before it was seen running"
            await asyncio.sleep(0.02)
        running = await browser.get(f"/admin/requests/{slow}")
        assert '<meta http-equiv="refresh" content="5">' in running.text
        assert "refreshes every 5 seconds" in running.text
    finally:
        assert await runner == {slow: "completed"}
    done = await browser.get(f"/admin/requests/{slow}")
    assert 'http-equiv="refresh"' not in done.text
    assert "postgres_items: 1" in done.text and "invoices: 1" in done.text
    assert "completed" in done.text
