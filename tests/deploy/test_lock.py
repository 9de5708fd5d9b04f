"""The lock files are what CI and the image install, and they agree with pyproject.toml
(issue 17, item 5). Offline and cheap: pyproject, the two locks and the installed
packages' own metadata."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"
TEST_LOCK = ROOT / "requirements" / "test.lock"
RELOCK = "pyproject.toml and requirements/*.lock disagree: run `make lock`"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def pins(lock: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a lock file; every entry pinned and hashed."""
    found: dict[str, str] = {}
    entries = re.split(r"\n(?=\S)", lock.read_text())
    for entry in entries:
        if entry.startswith("#") or not entry.strip():
            continue
        match = _PIN.match(entry)
        assert match, f"{lock.name}: not an exact pin: {entry.splitlines()[0]!r}"
        assert "--hash=sha256:" in entry, f"{lock.name}: {match[1]} has no hash"
        found[canonicalize_name(match[1])] = match[2]
    return found


def declared() -> tuple[list[Requirement], list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [Requirement(r) for r in project["dependencies"]]
    test = [Requirement(r) for r in project["optional-dependencies"]["test"]]
    return runtime, test


def unmet(requirements: list[Requirement], locked: dict[str, str]) -> list[str]:
    """Each requirement, and what each extra it asks for pulls in (from the installed
    distribution's metadata), present in ``locked`` at a version it allows."""
    problems = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        version = locked.get(name)
        if version is None:
            problems.append(f"{requirement} is not in the lock")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement}: the lock pins {version}")
        for extra in requirement.extras:
            for dependency in map(Requirement, metadata.requires(requirement.name) or []):
                marker = dependency.marker
                if marker is not None and marker.evaluate({"extra": extra}):
                    wanted = canonicalize_name(dependency.name)
                    if wanted not in locked:
                        problems.append(f"{requirement.name}[{extra}] needs {dependency.name}")
    return problems


def test_the_locks_hold_every_dependency_of_pyproject_at_an_allowed_version() -> None:
    runtime, test = declared()
    assert unmet(runtime, pins(RUNTIME_LOCK)) == [], RELOCK
    assert unmet(runtime + test, pins(TEST_LOCK)) == [], RELOCK


def test_the_image_runs_the_versions_that_ci_tests() -> None:
    """The runtime lock is resolved within the test lock: same package, same version."""
    runtime, test = pins(RUNTIME_LOCK), pins(TEST_LOCK)
    differ = {name: (v, test.get(name)) for name, v in runtime.items() if test.get(name) != v}
    assert differ == {}, RELOCK
    # The test tools stay out of the image.
    assert not {"pytest", "moto", "ruff", "mypy", "kubernetes-validate"} & runtime.keys()


def test_the_locks_are_for_the_python_of_the_image_and_ci() -> None:
    for lock in (RUNTIME_LOCK, TEST_LOCK):
        assert "CPython 3.11, Linux x86_64" in lock.read_text().splitlines()[1]


def test_this_environment_was_installed_from_the_test_lock() -> None:
    """scripts/bootstrap.sh (so CI) installs the test lock: every pin is what runs here."""
    installed: dict[str, str] = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
    }
    wrong = {
        name: (version, installed.get(name))
        for name, version in pins(TEST_LOCK).items()
        if installed.get(name) != version
    }
    assert wrong == {}, "the venv is not the lock: run scripts/bootstrap.sh"


def test_the_lock_check_catches_a_dependency_missing_or_out_of_range() -> None:
    locked = pins(RUNTIME_LOCK)
    assert unmet([Requirement("fastapi>=0.115")], locked) == []
    assert unmet([Requirement("fastapi>=999")], locked) == [
        f"fastapi>=999: the lock pins {locked['fastapi']}"
    ]
    assert unmet([Requirement("left-pad-for-python")], locked) == [
        "left-pad-for-python is not in the lock"
    ]
    without_uvloop = {k: v for k, v in locked.items() if k != "uvloop"}
    assert unmet([Requirement("uvicorn[standard]>=0.30")], without_uvloop) == [
        "uvicorn[standard] needs uvloop"
    ]
