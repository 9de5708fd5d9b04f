"""`soundops-deletion holds list` and `requests list`: an operator sees the holds in force,
their age, and the requests on hold, from the same tracking store as the service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from app.cli import cli
from app.settings import get_settings
from app.state import AppState
from tests.app_fixtures import HASH_KEY, JWT_SECRET, RECEIPT_KEY
from tests.engine_support import new_script
from testsupport.cli import SettingsForTests, doubles_installed

Auth = Callable[..., dict[str, str]]


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {"testing_purgers": new_script(tmp_path, default=["ok"]).path}


@pytest.fixture
def cli_env(state: AppState, settings: SettingsForTests) -> Iterator[dict[str, str]]:
    env = {
        "DELETION_ENVIRONMENT": "test",
        "DELETION_DATABASE_URL": state.settings.database_url,
        "DELETION_JWT_SECRET": JWT_SECRET,
        "DELETION_HASH_KEY": HASH_KEY,
        "DELETION_RECEIPT_SIGNING_KEY": RECEIPT_KEY,
        "DELETION_TESTING_PURGERS": str(settings.testing_purgers),
    }
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


async def run(env: dict[str, str], *args: str) -> Result:
    def invoke() -> Result:
        with doubles_installed():
            return CliRunner().invoke(cli, list(args), env=env)

    return await asyncio.to_thread(invoke)  # the CLI runs its own event loop


async def test_holds_list_and_requests_on_hold_from_the_command_line(
    client: httpx.AsyncClient, auth: Auth, cli_env: dict[str, str]
) -> None:
    request = (
        await client.post(
            "/v1/deletion-requests",
            json={"kind": "account", "subject": {"site_name": "cli-held-band"}},
            headers=auth(),
        )
    ).json()
    placed = (
        await client.post(
            "/v1/holds",
            json={"subject": {"site_name": "cli-held-band"}, "reason": "Case 7"},
            headers=auth("deletions:admin"),
        )
    ).json()

    table = await run(cli_env, "holds", "list")
    assert table.exit_code == 0, table.output
    assert "1 legal hold(s)" in table.output
    listed = await run(cli_env, "holds", "list", "--json")
    (item,) = json.loads(listed.output)
    assert item["id"] == placed["id"] and item["reason"] == "Case 7"

    on_hold = await run(cli_env, "requests", "list", "--status", "on_hold", "--json")
    assert on_hold.exit_code == 0, on_hold.output
    assert [r["id"] for r in json.loads(on_hold.output)] == [request["id"]]
    everything = json.loads((await run(cli_env, "requests", "list", "--json")).output)
    assert [r["status"] for r in everything] == ["on_hold"]

    await client.delete(f"/v1/holds/{placed['id']}", headers=auth("deletions:admin"))
    assert json.loads((await run(cli_env, "holds", "list", "--json")).output) == []
    released = json.loads((await run(cli_env, "holds", "list", "--all", "--json")).output)
    assert released[0]["subject"]["site_name"].startswith("hmac-sha256:")
    assert released[0]["reason"] is None
