"""``python -m app.healthcheck``, the image's HEALTHCHECK, run against a real ``serve``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve_process import _free_port, clean_env, start

pytestmark = pytest.mark.slow


def _check(env: dict[str, str]) -> int:
    return subprocess.run(
        [sys.executable, "-m", "app.healthcheck"], env=env, timeout=30, check=False
    ).returncode


def test_the_healthcheck_probes_the_port_of_deletion_port(tmp_path: Path) -> None:
    env = clean_env(tmp_path, DELETION_ENVIRONMENT="development")

    def probe(base: str) -> tuple[int, int, int]:
        port = base.rsplit(":", 1)[1]
        closed = str(_free_port())
        return (
            _check({**env, "DELETION_PORT": port}),
            _check({**env, "DELETION_PORT": closed}),
            # worker and poller: their metrics port wins over DELETION_PORT
            _check({**env, "DELETION_PORT": port, "DELETION_METRICS_PORT": closed}),
        )

    started = start(tmp_path, env, port_from_env=True, probe=probe)
    assert started.exit_code is None, started.output
    assert started.probe == (0, 1, 1)
