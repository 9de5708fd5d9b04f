"""The image (issue 17, item 5), read from the Dockerfile itself: there is no Docker
engine here, so each property a cluster relies on is checked in the file."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIGEST = re.compile(r"^[a-z0-9./-]+:(?P<tag>[\w.-]+)@sha256:[0-9a-f]{64}$")


@dataclass
class Instruction:
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    parsed = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        parsed.append(Instruction(keyword.upper(), args.strip()))
    return parsed


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    """Instructions per build stage (each starting with its FROM); global ARGs first."""
    result: list[list[Instruction]] = [[]]
    for instruction in parsed:
        if instruction.keyword == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def env_of(stage: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.args):
                name, _, value = word.partition("=")
                values[name] = value
    return values


def base_images(parsed: list[Instruction]) -> list[str]:
    args = {}
    for instruction in stages(parsed)[0]:
        if instruction.keyword == "ARG":
            name, _, value = instruction.args.partition("=")
            args[name] = value
    images = []
    for stage in stages(parsed)[1:]:
        image = stage[0].args.split()[0]
        images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image))
    return images


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return instructions((ROOT / "Dockerfile").read_text())


def test_every_stage_is_python_3_11_pinned_by_digest(dockerfile: list[Instruction]) -> None:
    images = base_images(dockerfile)
    assert len(images) == 2
    for image in images:
        match = DIGEST.match(image)
        assert match, f"{image} is not pinned by digest"
        assert image.startswith("python:3.11"), f"{image}: CI tests CPython 3.11"
    # ... which is the Python that the locks, mypy and ruff are for.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["mypy"]["python_version"] == "3.11"
    assert pyproject["tool"]["ruff"]["target-version"] == "py311"
    assert "CPython 3.11" in (ROOT / "requirements" / "runtime.lock").read_text()


def test_the_image_installs_the_runtime_lock_hash_checked(dockerfile: list[Instruction]) -> None:
    installs = [i.args for i in dockerfile if i.keyword == "RUN" and "pip install" in i.args]
    assert any("--require-hashes -r requirements/runtime.lock" in run for run in installs), installs
    for run in installs:
        for command in run.split("&&"):
            if "pip install" in command and "-r requirements/runtime.lock" not in command:
                assert "--no-deps" in command, f"unpinned dependencies may come in: {command}"
    copied = [i.args for i in dockerfile if i.keyword == "COPY"]
    assert "requirements/runtime.lock requirements/runtime.lock" in copied
    # ... and .dockerignore lets the lock (and the project) into the build context.
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("requirements/runtime.lock", "pyproject.toml", "app/", "migrations/"):
        assert f"!{needed}" in ignore


def test_the_image_runs_as_a_numeric_non_root_user(dockerfile: list[Instruction]) -> None:
    final = stages(dockerfile)[-1]
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "the image runs as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "runAsNonRoot needs a numeric, non-zero uid"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    # Nothing after USER switches back.
    after = final[[i.args for i in final].index(users[-1]) :]
    assert not [i for i in after if i.keyword == "RUN"]


def test_the_image_has_no_tracking_database_by_default(dockerfile: list[Instruction]) -> None:
    """Production, and no SQLite file inside the container: the service refuses to start
    until DELETION_DATABASE_URL is given (tests/test_production_startup.py)."""
    for stage in stages(dockerfile)[1:]:
        assert "DELETION_DATABASE_URL" not in env_of(stage)
    assert not [i for i in dockerfile if i.keyword == "ARG" and "DELETION_" in i.args]
    assert env_of(stages(dockerfile)[-1])["DELETION_ENVIRONMENT"] == "production"


def test_the_healthcheck_and_the_command_follow_the_configured_port(
    dockerfile: list[Instruction],
) -> None:
    final = stages(dockerfile)[-1]
    port = env_of(final)["DELETION_PORT"]
    assert [i.args for i in final if i.keyword == "EXPOSE"] == [port]
    (healthcheck,) = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert healthcheck.endswith('CMD ["python", "-m", "app.healthcheck"]')
    assert str(port) not in healthcheck, "a fixed port in the healthcheck"
    (command,) = [i.args for i in final if i.keyword == "CMD"]
    assert command.startswith('["serve"') and "--port" not in command
    assert [i.args for i in final if i.keyword == "ENTRYPOINT"] == ['["soundops-deletion"]']
