"""The command line, and the newcomer path: `serve` on the embedded default, then HTTP calls."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from typer.testing import CliRunner

from app.cli import cli

BIN = Path(sys.executable).parent / "soundops-deletion"
SECRET = "cli-test-secret-which-is-long-enough-for-hs256"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A newcomer's environment, as `make run` sets it: development, no other DELETION_
    settings, no AWS credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DELETION_", "AWS_"))}
    env.update({"DELETION_ENVIRONMENT": "development", **extra})
    return env


def test_token_mints_a_verifiable_jwt(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import get_settings

    monkeypatch.setenv("DELETION_ENVIRONMENT", "development")
    monkeypatch.setenv("DELETION_JWT_SECRET", SECRET)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            cli, ["token", "--scope", "deletions:read", "-s", "deletions:write", "--subject", "me"]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    claims = jwt.decode(
        result.output.strip(), SECRET, algorithms=["HS256"], audience="soundops-deletion"
    )
    assert claims["sub"] == "me"
    assert claims["scope"] == "deletions:read deletions:write"
    assert 3500 < claims["exp"] - claims["iat"] <= 3600


def test_token_refuses_an_unknown_scope() -> None:
    result = CliRunner().invoke(cli, ["token", "--scope", "deletions:everything"])
    assert result.exit_code == 2


def test_invalid_configuration_is_reported_by_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELETION_EMAIL_CONFIRM_TTL", "whenever")
    from app.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["token", "--scope", "deletions:read"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "DELETION_EMAIL_CONFIRM_TTL" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str]]]:
    """`soundops-deletion serve` as a newcomer runs it: no configuration, fresh folder."""
    port = _free_port()
    env = _env(tmp_path, **getattr(request, "param", {}))
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port)], cwd=tmp_path, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp_path / "serve.log").read_text())
            time.sleep(0.2)
        yield base, env
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _cli(tmp: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [str(BIN), *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_newcomer_path_on_the_embedded_default(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """No store is configured: a request completes at once, every store skipped, saying why."""
    base, env = served
    assert (tmp_path / "deletion.db").exists(), "serve must create the embedded database"
    token = _cli(tmp_path, env, "token", "--scope", "deletions:admin").strip()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        created = client.post(
            "/v1/deletion-requests",
            json={
                "kind": "account",
                "subject": {"site_name": "the-band"},  # as in the README
            },
        )
        assert created.status_code == 202, created.text
        request_id = created.json()["id"]
        deadline = time.monotonic() + 20
        while (data := client.get(f"/v1/deletion-requests/{request_id}").json())[
            "status"
        ] != "completed":
            assert time.monotonic() < deadline, data
            time.sleep(0.2)
        assert {t["status"] for t in data["tasks"]} == {"skipped"}
        watched = _cli(tmp_path, env, "requests", "watch", request_id, "--interval", "0.2")
        assert f"{request_id}: completed" in watched and "skipped" in watched
        assert all("not configured" in t["error"] or "not set" in t["error"] for t in data["tasks"])
        assert client.get("/readyz").json()["checks"]["worker"] == "ok"
        docs = client.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()


@pytest.mark.parametrize("served", [{"DELETION_RUN_WORKER": "false"}], indirect=True)
def test_create_read_list_cancel_with_curl_like_calls(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    base, env = served
    token = _cli(tmp_path, env, "token", "--scope", "deletions:admin").strip()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        created = client.post(
            "/v1/deletion-requests",
            json={"kind": "account", "subject": {"site_name": "newcomer-band"}},
        )
        assert created.status_code == 202, created.text
        request_id = created.json()["id"]
        assert client.get(f"/v1/deletion-requests/{request_id}").json()["status"] == "pending"
        listing = client.get("/v1/deletion-requests").json()
        assert [item["id"] for item in listing["items"]] == [request_id]
        cancelled = client.post(f"/v1/deletion-requests/{request_id}/cancel")
        assert cancelled.json()["status"] == "cancelled"

    # The table shows whole ids even in a narrow terminal: an operator copies them.
    narrow = _cli(tmp_path, {**env, "COLUMNS": "60"}, "requests", "list")
    assert request_id in narrow
    listed = json.loads(_cli(tmp_path, env, "requests", "list", "--json"))
    assert [item["id"] for item in listed] == [request_id]
    assert _cli(tmp_path, env, "requests", "list", "--status", "pending", "--json").strip() == "[]"
    by_subject = _cli(
        tmp_path, env, "requests", "list", "--subject", "site_name=newcomer-band", "--json"
    )
    assert [item["id"] for item in json.loads(by_subject)] == [request_id]
    shown = json.loads(_cli(tmp_path, env, "requests", "show", request_id, "--json"))
    assert [e["type"] for e in shown["events"]] == ["created", "cancelled"]
    table = _cli(tmp_path, env, "requests", "show", request_id)
    assert "cancelled" in table and "meta_graph" in table

    # The operator commands work on the same store as the running service.
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        second = client.post(
            "/v1/deletion-requests",
            json={"kind": "account", "subject": {"site_name": "second-band"}},
        ).json()["id"]
    assert "cancelled" in _cli(tmp_path, env, "requests", "cancel", second, "--reason", "test")
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        assert client.get(f"/v1/deletion-requests/{second}").json()["status"] == "cancelled"
    retry = subprocess.run(
        [str(BIN), "requests", "retry", second],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert retry.returncode == 1 and "only failed ones can" in retry.stderr
    shown = _cli(tmp_path, env, "preview", "meta_data", "ig_username=@Some.Artist")
    assert "not configured" in shown and "mongodb" in shown
    bad = subprocess.run(
        [str(BIN), "preview", "account", "site_name=a", "owner_email=b@example.com"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "exactly one" in bad.stderr
    no_equals = subprocess.run(
        [str(BIN), "preview", "account", "site_name"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_equals.returncode == 2, no_equals.stdout
    assert "identity=value" in no_equals.stderr and "'site_name'" in no_equals.stderr


def test_datamap_check_fails_when_no_store_is_configured(tmp_path: Path) -> None:
    """Nothing checked proves nothing: the check fails rather than pass."""
    env = _env(
        tmp_path,
        DELETION_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
        DELETION_S3_ENABLED="false",
    )
    result = subprocess.run(
        [str(BIN), "datamap", "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout
    assert "Nothing was checked" in result.stderr
    assert "covered by the map" not in result.stdout


def test_migrate_then_show_unknown_request_fails_cleanly(tmp_path: Path) -> None:
    env = _env(tmp_path, DELETION_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    assert "migrated" in _cli(tmp_path, env, "migrate")
    result = subprocess.run(
        [str(BIN), "requests", "show", "00000000-0000-4000-8000-000000000000"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_an_unmigrated_postgres_database(
    fresh_pg_database: object, tmp_path: Path
) -> None:
    database = fresh_pg_database()  # type: ignore[operator]
    env = _env(tmp_path, DELETION_DATABASE_URL=database.url)
    result = subprocess.run(
        [str(BIN), "requests", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "soundops-deletion migrate" in result.stderr


def test_preview_on_the_embedded_default_says_every_store_is_skipped(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    base, env = served
    token = _cli(tmp_path, env, "token", "--scope", "deletions:write").strip()
    response = httpx.post(
        f"{base}/v1/deletion-requests/preview",
        json={"kind": "meta_data", "subject": {"ig_username": "some.artist"}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    tasks = response.json()["tasks"]
    assert [t["purger"] for t in tasks] == ["meta_graph", "postgres", "mongodb", "s3"]
    assert all(t["skipped"] and t["would_delete"] == {} for t in tasks)


def test_make_run_asks_for_development_explicitly() -> None:
    """The README's first command works on a fresh machine although production is the
    default: `make run` is what asks for development."""
    root = Path(__file__).resolve().parents[2]
    shown = subprocess.run(
        ["make", "-n", "run"], cwd=root, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert "DELETION_ENVIRONMENT=development .venv/bin/soundops-deletion serve" in shown


@pytest.mark.parametrize("module", ["app.cli", "testsupport.cli"])
def test_the_command_line_starts_without_the_web_app(module: str) -> None:
    """The one-off commands (requests, holds, checks, migrate, token) build the service's
    parts through app.wiring: FastAPI, uvicorn and the routers are imported only by
    `serve`, `worker` and `mailbox poll` (0.4 s of a command's 2.6 s start-up)."""
    probe = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " {'fastapi', 'starlette', 'uvicorn'} or m in {'app.main', 'app.metrics_server'}"
        " or (m.startswith('app.routers.') and m != 'app.routers.presenters')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
