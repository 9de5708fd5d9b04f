"""`worker` and `mailbox poll` serve /healthz and /metrics on DELETION_METRICS_PORT, and
still stop gracefully on SIGTERM; production logs (uvicorn's own lines too) are JSON."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app_fixtures import HASH_KEY, JWT_SECRET, RECEIPT_KEY
from tests.cli.test_commands import BIN, _env, _free_port


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, timeout=1)
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(log.read_text()) from None
            time.sleep(0.2)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[object]:
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(*args: str, **extra: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{args[0]}-{len(processes)}.log"
        env = _env(tmp_path, DELETION_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}", **extra)
        with log.open("w") as out:
            process = subprocess.Popen(
                [str(BIN), *args], cwd=tmp_path, env=env, stdout=out, stderr=out
            )
        processes.append((process, log))
        return process, log

    yield start
    for process, _ in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _scrape(port: int) -> str:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    return response.text


def test_worker_serves_health_and_metrics_and_stops_on_sigterm(started: object) -> None:
    port = _free_port()
    process, log = started("worker", DELETION_METRICS_PORT=str(port))  # type: ignore[operator]
    health = _wait_for(f"http://127.0.0.1:{port}/healthz", process, log)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    text = _scrape(port)
    heartbeat = next(
        line for line in text.splitlines() if line.startswith("deletion_worker_heartbeat_timestamp")
    )
    assert abs(float(heartbeat.split()[-1]) - time.time()) < 60
    assert "deletion_requests_open" in text and "_created" not in text

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()
    assert "worker_stopped" in log.read_text()


def test_mailbox_poll_serves_health_and_metrics(started: object, imap_mailbox: str) -> None:
    port = _free_port()
    process, log = started(  # type: ignore[operator]
        "mailbox", "poll", DELETION_METRICS_PORT=str(port), DELETION_IMAP_URL=imap_mailbox
    )
    assert _wait_for(f"http://127.0.0.1:{port}/healthz", process, log).status_code == 200
    deadline = time.monotonic() + 30
    while 'deletion_email_polls_total{result="ok"}' not in (text := _scrape(port)):
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    assert "deletion_email_last_successful_poll_timestamp_seconds" in text
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()


def test_no_metrics_port_unless_asked(started: object) -> None:
    port = _free_port()
    process, log = started("worker")  # type: ignore[operator]
    deadline = time.monotonic() + 30
    while "worker_started" not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def _serve_outside_development(tmp_path: Path, **extra: str) -> tuple[str, Path, object]:
    env = _env(
        tmp_path,
        DELETION_ENVIRONMENT="test",
        DELETION_DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}",
        DELETION_HASH_KEY=HASH_KEY,
        DELETION_JWT_SECRET=JWT_SECRET,
        DELETION_RECEIPT_SIGNING_KEY=RECEIPT_KEY,
        DELETION_RUN_WORKER="false",
        **extra,
    )
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN), "serve", "--port", str(port)], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    assert _wait_for(f"{base}/healthz", process, log).status_code == 200
    return base, log, process


def test_outside_development_uvicorn_lines_are_json_without_the_client_address(
    tmp_path: Path,
) -> None:
    base, log, process = _serve_outside_development(tmp_path)
    try:
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        time.sleep(0.5)
    finally:
        process.terminate()  # type: ignore[attr-defined]
        process.wait(timeout=10)  # type: ignore[attr-defined]
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line, uvicorn's too, is JSON
    access = [p for p in parsed if p.get("logger") == "uvicorn.access"]
    assert access and '"GET /healthz HTTP/1.1" 200' in access[-1]["event"]
    assert any(p.get("logger") == "uvicorn.error" for p in parsed)  # "Started server process"
    assert "127.0.0.1" not in log.read_text().replace(base, "")


def test_the_log_level_is_configurable(tmp_path: Path) -> None:
    base, log, process = _serve_outside_development(tmp_path, DELETION_LOG_LEVEL="WARNING")
    try:
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        time.sleep(0.5)
    finally:
        process.terminate()  # type: ignore[attr-defined]
        process.wait(timeout=10)  # type: ignore[attr-defined]
    assert "/healthz" not in log.read_text()  # access lines are INFO
