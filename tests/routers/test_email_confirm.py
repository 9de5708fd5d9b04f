"""The confirmation link's public page (GET shows, only POST confirms) and operators'
approve/reject endpoints."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.models import DeletionRequest, utcnow
from app.services.intake.email.filing import FiledEmailRequest, file_email_request
from app.state import AppState
from app.wiring import new_engine
from tests.engine_support import Script, new_script
from testsupport.seed import add_tenant

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"
SITE = "linked-band"
OWNER = "owner.linked@example.com"


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return new_script(tmp_path, default=["ok"])


@pytest.fixture
def settings_overrides(script: Script, soundops_db: str) -> dict[str, Any]:
    # Approving checks what a subject resolves to in the SoundOps database.
    return {"testing_purgers": script.path, "target_postgres_url": soundops_db}


async def file(
    state: AppState,
    *,
    message_id: str = "<m1@mail.example>",
    site: str = SITE,
    review_reason: str | None = None,
) -> FiledEmailRequest:
    async with state.sessionmaker() as session:
        return await file_email_request(
            session,
            kind="account",
            subject={"site_name": site},
            status="needs_review" if review_reason else "awaiting_confirmation",
            review_reason=review_reason,
            message_id=message_id,
            recipients=[] if review_reason else [OWNER],
            settings=state.settings,
        )


async def status_of(client: httpx.AsyncClient, auth: Auth, request_id: uuid.UUID) -> str:
    response = await client.get(f"{URL}/{request_id}", headers=auth())
    return str(response.json()["status"])


def assert_private(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_the_page_shows_what_will_be_deleted_and_a_post_button(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    filed = await file(state)
    for _ in range(2):  # opened twice (a mail scanner first): nothing changes
        page = await client.get(f"/deletion-confirm/{filed.token}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert_private(page)
        assert "Deletion of a SoundOps account" in page.text
        assert "Account database" in page.text and "1 item(s)" in page.text
        assert '<form method="post">' in page.text
        assert SITE not in page.text and OWNER not in page.text
        assert str(filed.token) not in page.text
    assert await status_of(client, auth, filed.request.id) == "awaiting_confirmation"


async def test_the_post_confirms_once_then_the_link_is_used(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    filed = await file(state)
    url = f"/deletion-confirm/{filed.token}"
    confirmed = await client.post(url)
    assert confirmed.status_code == 303
    assert confirmed.headers["location"] == (f"/deletion-status/{filed.request.confirmation_code}")
    assert_private(confirmed)
    assert await status_of(client, auth, filed.request.id) == "pending"
    metrics = (await client.get("/metrics")).text
    assert "deletion_email_confirmations_confirmed_total " in metrics
    assert 'deletion_requests{kind="account",status="pending"} 1.0' in metrics
    again = await client.post(url)
    assert again.status_code == 410 and "has been used" in again.text
    assert_private(again)
    page = await client.get(url)
    assert page.status_code == 410 and "has been used" in page.text
    assert f"/deletion-status/{filed.request.confirmation_code}" in page.text
    assert await status_of(client, auth, filed.request.id) == "pending"


async def test_unknown_links_are_404_pages(client: httpx.AsyncClient, state: AppState) -> None:
    await file(state)
    for token in ("A" * 43, "not-a-token", "x" * 300):
        for method in ("GET", "POST"):
            response = await client.request(method, f"/deletion-confirm/{token}")
            assert response.status_code == 404, (method, token)
            assert "Link not found" in response.text
            assert_private(response)


async def test_expired_and_rejected_links_are_410_pages_and_change_nothing(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    expiring = await file(state, message_id="<e@x>")
    rejected = await file(state, message_id="<r@x>", site="rejected-band")
    async with state.sessionmaker() as session:
        await session.execute(
            sa.update(DeletionRequest)
            .where(DeletionRequest.id == expiring.request.id)
            .values(confirm_expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    assert await new_engine(state, "w").expire_confirmations() == 1
    reject = await client.post(
        f"{URL}/{rejected.request.id}/reject", json={"reason": "spam"}, headers=auth()
    )
    assert reject.status_code == 200
    for filed, text, status in (
        (expiring, "has expired", "cancelled"),
        (rejected, "was cancelled", "cancelled"),
    ):
        for method in ("GET", "POST"):
            response = await client.request(method, f"/deletion-confirm/{filed.token}")
            assert response.status_code == 410 and text in response.text
        assert await status_of(client, auth, filed.request.id) == status
    shown = (await client.get(f"{URL}/{expiring.request.id}", headers=auth())).json()
    assert shown["status_reason"] == "confirmation link expired"


async def test_approve_and_reject_need_the_admin_scope(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    filed = await file(state, review_reason="dmarc_fail")
    for action in ("approve", "reject"):
        url = f"{URL}/{filed.request.id}/{action}"
        assert (await client.post(url)).status_code == 401
        forbidden = await client.post(url, headers=auth("deletions:write", "deletions:read"))
        assert forbidden.status_code == 403
        assert forbidden.headers["content-type"] == "application/problem+json"
    shown = (await client.get(f"{URL}/{filed.request.id}", headers=auth())).json()
    assert shown["status"] == "needs_review" and shown["review_reason"] == "dmarc_fail"


async def test_approve_runs_a_reviewed_request_and_reject_stops_one(
    client: httpx.AsyncClient, auth: Auth, state: AppState, soundops_db: str
) -> None:
    for site in (SITE, "corrected-band"):
        await add_tenant(soundops_db, site, OWNER)
    first = await file(state, message_id="<1@x>", review_reason="sender_not_on_file")
    second = await file(state, message_id="<2@x>", site="other-band", review_reason="no_match")
    approved = await client.post(
        f"{URL}/{first.request.id}/approve", headers=auth("deletions:admin")
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "pending"
    conflict = await client.post(f"{URL}/{first.request.id}/approve", headers=auth())
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"
    assert (await client.post(f"{URL}/{first.request.id}/reject", headers=auth())).status_code == (
        409
    )
    missing = await client.post(f"{URL}/{uuid.uuid4()}/approve", headers=auth())
    assert missing.status_code == 404
    bad = await client.post(
        f"{URL}/{second.request.id}/approve",
        json={"subject": {"ig_username": "not.an.account.identity"}},
        headers=auth(),
    )
    assert bad.status_code == 422 and "not.an.account.identity" not in bad.text
    extra = await client.post(
        f"{URL}/{second.request.id}/approve", json={"subjects": {}}, headers=auth()
    )
    assert extra.status_code == 422
    corrected = await client.post(
        f"{URL}/{second.request.id}/approve",
        json={"subject": {"site_name": " corrected-band "}},
        headers=auth(),
    )
    assert corrected.status_code == 200 and corrected.json()["status"] == "pending"
    listed = await client.get(URL, params={"subject": "site_name=corrected-band"}, headers=auth())
    assert [i["id"] for i in listed.json()["items"]] == [str(second.request.id)]

    third = await file(state, message_id="<3@x>", site="third-band", review_reason="no_match")
    rejected = await client.post(
        f"{URL}/{third.request.id}/reject", json={"reason": "not the owner"}, headers=auth()
    )
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "cancelled"
    assert rejected.json()["status_reason"] == "not the owner"
