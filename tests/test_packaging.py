"""The wheel that the Dockerfile installs: it carries the data map, the migrations and the CLI."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_has_everything_the_image_needs(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("soundops_deletion-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "app/soundops_datamap.yaml" in names
    assert "migrations/env.py" in names and "migrations/script.py.mako" in names
    assert sum(n.startswith("migrations/versions/") and n.endswith(".py") for n in names) >= 3
    assert not any(n.startswith("tests/") for n in names)
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "soundops-deletion = app.cli:main" in text


def test_the_entrypoint_runs() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "soundops-deletion"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for command in ("serve", "worker", "migrate", "token", "requests", "datamap", "retention"):
        assert command in result.stdout
