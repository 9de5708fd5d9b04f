"""``soundops-deletion serve`` in a process of its own, as a deployment starts it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent / "soundops-deletion"
# Secrets of a real deployment (not the development constants).
PRODUCTION = {
    "DELETION_PUBLIC_BASE_URL": "https://privacy.soundops.test",
    "DELETION_JWT_SECRET": "startup-test-jwt-secret-0123456789",
    "DELETION_HASH_KEY": "startup-test-hash-key-0123456789",
    "DELETION_RECEIPT_SIGNING_KEY": "dGVzdC1yZWNlaXB0LXNpZ25pbmcta2V5LTMyLWJ5dGU=",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No DELETION_ setting (DELETION_ENVIRONMENT unset: the default applies) and no AWS
    credentials anywhere botocore looks (variables, files, instance metadata)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DELETION_", "AWS_"))}
    (tmp_path / "aws-empty").write_text("")
    env.update(
        DELETION_DATABASE_URL=f"sqlite:///{tmp_path / 'deletion.db'}",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp_path / "aws-empty"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws-empty"),
    )
    env.update(extra)
    return env


@dataclass
class Start:
    exit_code: int | None  # None: it started and served /healthz
    output: str
    probe: Any = None  # what the running service answered to ``probe``


def start(
    tmp_path: Path,
    env: dict[str, str],
    *args: str,
    probe: Callable[[str], Any] | None = None,
    timeout: float = 40,
    port_from_env: bool = False,
) -> Start:
    """Run ``serve`` until it answers /healthz (then ``probe(base_url)``, then stop it)
    or exits. The port is a free one, given as ``--port`` or, with ``port_from_env``, as
    ``DELETION_PORT`` (as a container image gives it)."""
    port = _free_port()
    log_path = tmp_path / f"serve-{port}.log"
    port_args = [] if port_from_env else ["--port", str(port)]
    if port_from_env:
        env = {**env, "DELETION_PORT": str(port)}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(BIN), "serve", *port_args, *args],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while process.poll() is None:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        answer = probe(base) if probe else None
                        return Start(None, log_path.read_text(), answer)
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            return Start(process.returncode, log_path.read_text())
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=15)
