"""What a finished request keeps: no free text of an operator's, and no request in review
that nobody decides keeps what its message named for ever."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.models import utcnow
from app.state import AppState
from app.wiring import new_engine
from tests.engine_support import Script, new_script, run_until_settled
from tests.services.evidence.test_evidence import dump_tracking_db, until_minimised
from tests.services.intake.email.test_filing import (
    SITE,
    event_types,
    file,
    reload,
    set_values,
)

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"
# What operators type: it names people.
CREATE_REASON = "Asked by Ola Nordmann on the phone"
CANCEL_REASON = "Ola Nordmann called again: +47 555 0199"
REJECT_REASON = "Kim Schmidt says the band is not hers"


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return new_script(tmp_path, default=["ok"])


@pytest.fixture
def settings_overrides(script: Script) -> dict[str, Any]:
    return {"testing_purgers": script.path, "worker_poll_seconds": 0.05}


async def test_operators_free_text_reasons_are_gone_after_minimisation(
    client: httpx.AsyncClient, auth: Auth, state: AppState, script: Script
) -> None:
    created = await client.post(
        URL,
        json={
            "kind": "account",
            "subject": {"site_name": "free-text-band"},
            "reason": CREATE_REASON,
        },
        headers=auth(),
    )
    cancelled_id = created.json()["id"]
    cancelled = await client.post(
        f"{URL}/{cancelled_id}/cancel", json={"reason": CANCEL_REASON}, headers=auth()
    )
    assert cancelled.json()["status_reason"] == CANCEL_REASON  # operators see it meanwhile
    review = await file(state, status="needs_review", review_reason="no_match")
    rejected = await client.post(
        f"{URL}/{review.request.id}/reject", json={"reason": REJECT_REASON}, headers=auth()
    )
    assert rejected.json()["status_reason"] == REJECT_REASON

    await until_minimised(state, cancelled_id)
    await until_minimised(state, str(review.request.id))

    shown = (await client.get(f"{URL}/{cancelled_id}", headers=auth())).json()
    assert (shown["status"], shown["status_reason"]) == ("cancelled", "cancelled by an operator")
    shown = (await client.get(f"{URL}/{review.request.id}", headers=auth())).json()
    assert (shown["status"], shown["status_reason"]) == ("cancelled", "rejected by an operator")
    dump = await dump_tracking_db(state)
    # (Not short pieces such as "555": hex hashes and random codes may hold them.)
    for text in (CREATE_REASON, CANCEL_REASON, REJECT_REASON, "Nordmann", "Schmidt"):
        assert text not in dump, text
    assert script.starts() == []


async def test_the_services_own_reasons_survive_minimisation(state: AppState) -> None:
    expired = await file(state)
    await set_values(state, expired.request.id, confirm_expires_at=utcnow() - timedelta(minutes=1))
    assert await new_engine(state, "w").expire_confirmations() == 1
    minimised = await until_minimised(state, str(expired.request.id))
    assert minimised.status_reason == "confirmation link expired"


async def test_a_review_nobody_decides_is_cancelled_and_minimised_after_30_days(
    state: AppState, script: Script
) -> None:
    review = await file(state, status="needs_review", review_reason="sender_not_on_file")
    young = await file(
        state,
        message_id="<young@x>",
        subject={"site_name": "young-band"},
        status="needs_review",
        review_reason="no_match",
    )
    waiting = await file(state, message_id="<waiting@x>", subject={"site_name": "waiting-band"})
    month = utcnow() - timedelta(days=30, minutes=1)
    for filed in (review, waiting):
        await set_values(state, filed.request.id, created_at=month)
    await set_values(state, young.request.id, created_at=utcnow() - timedelta(days=29))
    engine = new_engine(state, "w")

    assert await engine.expire_reviews() == 1
    assert await engine.expire_reviews() == 0
    request = await reload(state, review.request.id)
    assert request.status == "cancelled"
    assert request.status_reason == "not reviewed within 30 days"
    assert "review_expired" in await event_types(state, review.request.id)
    # Younger reviews wait; a link awaiting confirmation has its own expiry.
    assert (await reload(state, young.request.id)).status == "needs_review"
    assert (await reload(state, waiting.request.id)).status == "awaiting_confirmation"

    minimised = await until_minimised(state, str(review.request.id))
    assert minimised.status == "cancelled"
    assert SITE not in str(minimised.subject)
    assert {t.status for t in minimised.tasks} == {"pending"}  # nothing was run
    assert script.starts() == []
    assert SITE not in await dump_tracking_db(state)


async def test_the_worker_expires_old_reviews_on_its_tick(state: AppState) -> None:
    review = await file(state, status="needs_review", review_reason="dmarc_fail")
    await set_values(state, review.request.id, created_at=utcnow() - timedelta(days=31))
    statuses = await run_until_settled(state, [str(review.request.id)])
    assert statuses == {str(review.request.id): "cancelled"}
    assert (await reload(state, review.request.id)).status_reason == "not reviewed within 30 days"
