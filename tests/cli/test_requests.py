"""`soundops-deletion requests approve|reject`: operators' review of requests from e-mail,
on the same tracking store as the running service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from app.cli import cli
from app.services.intake.email.filing import FiledEmailRequest, file_email_request
from app.settings import get_settings
from app.state import AppState
from tests.app_fixtures import HASH_KEY, JWT_SECRET, RECEIPT_KEY
from tests.engine_support import new_script
from testsupport.cli import SettingsForTests, doubles_installed
from testsupport.seed import add_tenant


@pytest.fixture
def settings_overrides(tmp_path: Path, soundops_db: str) -> dict[str, Any]:
    return {
        "testing_purgers": new_script(tmp_path, default=["ok"]).path,
        "target_postgres_url": soundops_db,  # approving checks what a subject resolves to
    }


@pytest.fixture
def cli_env(state: AppState, settings: SettingsForTests) -> Iterator[dict[str, str]]:
    env = {
        "DELETION_ENVIRONMENT": "test",
        "DELETION_DATABASE_URL": state.settings.database_url,
        "DELETION_JWT_SECRET": JWT_SECRET,
        "DELETION_HASH_KEY": HASH_KEY,
        "DELETION_RECEIPT_SIGNING_KEY": RECEIPT_KEY,
        "DELETION_TESTING_PURGERS": str(settings.testing_purgers),
        "DELETION_TARGET_POSTGRES_URL": str(state.settings.target_postgres_url),
    }
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


async def run(env: dict[str, str], *args: str) -> Result:
    def invoke() -> Result:
        with doubles_installed():  # the service's command line, with the scripted purgers
            return CliRunner().invoke(cli, list(args), env=env)

    return await asyncio.to_thread(invoke)  # the CLI runs its own event loop


async def file(state: AppState, message_id: str, site: str, reason: str) -> FiledEmailRequest:
    async with state.sessionmaker() as session:
        return await file_email_request(
            session,
            kind="account",
            subject={"site_name": site},
            status="needs_review",
            review_reason=reason,
            message_id=message_id,
            recipients=[],
            settings=state.settings,
        )


async def test_approve_and_reject_from_the_command_line(
    state: AppState, cli_env: dict[str, str], soundops_db: str
) -> None:
    tenant_id = await add_tenant(soundops_db, "cli-real-band", "owner@cli-real-band.example")
    first = await file(state, "<1@x>", "cli-unknown-band", "no_match")
    second = await file(state, "<2@x>", "cli-spam-band", "dmarc_fail")

    bad = await run(cli_env, "requests", "approve", str(first.request.id), "--subject-json", "[1]")
    assert bad.exit_code == 2
    invalid = await run(
        cli_env, "requests", "approve", str(first.request.id), "--subject-json", '{"x": 1}'
    )
    assert invalid.exit_code == 1 and "subject.x: Extra inputs are not permitted" in invalid.output
    approved = await run(
        cli_env,
        "requests",
        "approve",
        str(first.request.id),
        "--subject-json",
        json.dumps({"site_name": "cli-real-band"}),
        "--actor",
        "ops-anna",
    )
    assert approved.exit_code == 0, approved.output
    assert f"{first.request.id}: pending" in approved.output
    request = await state.requests.get(first.request.id)
    assert request.status == "pending" and request.subject == {"site_name": "cli-real-band"}
    assert request.pinned == {"tenant_ids": [str(tenant_id)], "account_ids": []}
    again = await run(cli_env, "requests", "approve", str(first.request.id))
    assert again.exit_code == 1 and "only needs_review" in again.output

    rejected = await run(
        cli_env, "requests", "reject", str(second.request.id), "--reason", "forged sender"
    )
    assert rejected.exit_code == 0, rejected.output
    request = await state.requests.get(second.request.id)
    assert request.status == "cancelled" and request.status_reason == "forged sender"
    shown = await run(cli_env, "requests", "show", str(second.request.id), "--json")
    events = json.loads(shown.output)["events"]
    assert [e["type"] for e in events] == ["created", "rejected"]
    assert events[-1]["actor"] == "cli"
    again = await run(cli_env, "requests", "reject", str(second.request.id))
    assert again.exit_code == 1 and "cannot be rejected" in again.output
