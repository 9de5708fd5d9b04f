"""``serve`` takes its port from ``DELETION_PORT`` too (issue 17, items 5-6): the image's
command, its HEALTHCHECK and the Kubernetes probes all follow that one variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from tests.serve_process import clean_env, start

pytestmark = pytest.mark.slow


def test_serve_listens_on_the_port_of_deletion_port(tmp_path: Path) -> None:
    env = clean_env(tmp_path, DELETION_ENVIRONMENT="development")
    started = start(tmp_path, env, port_from_env=True)
    assert started.exit_code is None, started.output


def test_an_invalid_deletion_port_is_refused_by_name() -> None:
    result = CliRunner().invoke(cli, ["serve"], env={"DELETION_PORT": "eighty"})
    assert result.exit_code == 2
    assert "DELETION_PORT" in result.output  # the variable named, not only the flag
