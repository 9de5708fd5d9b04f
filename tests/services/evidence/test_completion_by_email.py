"""The completion e-mail of a request that came by e-mail and was approved after review
goes to the address it came from (#16 item 5), for both kinds; never to a sender whose
message failed DMARC (a forged From)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.state import AppState
from app.wiring import new_engine
from tests.engine_support import Script, new_script
from testsupport.receivers import SmtpSink
from testsupport.seed import add_page, add_tenant

Auth = Callable[..., dict[str, str]]
URL = "/v1/deletion-requests"
AUTHSERV = "mx.soundops.test"
OWNER = "real.owner@example.com"
SENDER = "Sender.Person@example.org"


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.close()


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return new_script(tmp_path, default=["ok"])


@pytest.fixture
def settings_overrides(script: Script, soundops_db: str, smtp: SmtpSink) -> dict[str, Any]:
    return {
        "testing_purgers": script.path,
        "target_postgres_url": soundops_db,
        "smtp_url": smtp.url,
        "email_authserv_id": AUTHSERV,
    }


def message(subject: str, body: str, message_id: str, *, dmarc: str = "pass") -> bytes:
    return (
        f"Authentication-Results: {AUTHSERV}; dmarc={dmarc} header.from=example.org\r\n"
        f"From: Sender Person <{SENDER}>\r\n"
        "To: privacy@soundops.example\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{message_id}@example.org>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()


async def approved(client: httpx.AsyncClient, auth: Auth, raw: bytes, reason: str) -> str:
    filed = await client.post(
        "/v1/inbound-email", content=raw, headers={**auth(), "Content-Type": "message/rfc822"}
    )
    assert filed.status_code == 202, filed.text
    assert filed.json()["outcome"] == "needs_review"
    request_id = str(filed.json()["request_id"])
    shown = await client.get(f"{URL}/{request_id}", headers=auth())
    assert shown.json()["review_reason"] == reason
    answer = await client.post(f"{URL}/{request_id}/approve", headers=auth())
    assert answer.status_code == 200, answer.text
    return request_id


async def until_minimised(state: AppState, request_id: str) -> None:
    engine = new_engine(state)
    deadline = asyncio.get_running_loop().time() + 15
    while (await state.requests.get(uuid.UUID(request_id))).minimised_at is None:
        claim = await engine.claim()
        if claim is not None:
            await engine.run_claimed(claim.request_id)
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


async def username_of(dsn: str, account_id: uuid.UUID) -> str:
    conn = await asyncpg.connect(dsn.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return str(
            await conn.fetchval(
                "SELECT ig_username FROM instagram_accounts WHERE id = $1", account_id
            )
        )
    finally:
        await conn.close()


def recipients(smtp: SmtpSink) -> list[str]:
    return [r.lower() for _, rcpts, _ in smtp.messages for r in rcpts]


async def test_an_approved_request_by_email_is_confirmed_to_its_sender_for_both_kinds(
    client: httpx.AsyncClient, auth: Auth, state: AppState, soundops_db: str, smtp: SmtpSink
) -> None:
    tenant = await add_tenant(soundops_db, "reviewed-band", OWNER)
    username = await username_of(soundops_db, await add_page(soundops_db, tenant, "Reviewed"))
    account = await approved(
        client,
        auth,
        message("Account Deletion Request", "Site: reviewed-band", "acc-1"),
        "sender_not_on_file",
    )
    meta = await approved(
        client,
        auth,
        message("Meta Data Deletion Request", f"Instagram: @{username}", "meta-1"),
        "sender_not_on_file",
    )
    for request_id in (account, meta):
        before = len(smtp.messages)
        await until_minimised(state, request_id)
        assert recipients(smtp)[before:] == [SENDER.lower()]
        (_, _, mail) = smtp.messages[-1]
        assert "deletion-status/" in str(mail.get_payload(decode=True))
        stored = await state.requests.get(uuid.UUID(request_id))
        assert stored.email_status == "sent" and stored.notify_email is None


async def test_a_sender_that_failed_dmarc_is_never_mailed_the_completion(
    client: httpx.AsyncClient, auth: Auth, state: AppState, soundops_db: str, smtp: SmtpSink
) -> None:
    await add_tenant(soundops_db, "forged-band", OWNER)
    raw = message("Account Deletion Request", "Site: forged-band", "forged-1", dmarc="fail")
    request_id = await approved(client, auth, raw, "dmarc_fail")
    await until_minimised(state, request_id)
    assert SENDER.lower() not in recipients(smtp)
