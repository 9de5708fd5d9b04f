"""The service with its test doubles, for tests in process and for real processes.

In process: ``create_app(settings, **doubles(settings))``. For tests that start real
processes (``serve``, ``worker``, ``mailbox poll``): ``command("worker")`` with
``environment(env)``, that is ``python -m testsupport.cli worker``, the service's own
command line (:mod:`app.cli`) built with the doubles. Two switches of tests only, which
the service itself never reads, choose them (both refused in production):

- ``DELETION_TESTING_PURGERS=/path/script.json``: scripted purgers and a resolver that
  finds nothing instead of the real ones (:mod:`testsupport.scripted`);
- ``DELETION_TESTING_EXIT_AFTER_HANDLING=true``: ``mailbox poll`` exits (status 75) right
  after handling its first message, before moving it: a poller killed between filing
  and moving.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict
from unittest import mock

from pydantic import model_validator

from app import cli as app_cli
from app import wiring
from app.cli.common import assembly
from app.purgers.base import PurgerName, PurgerSlot
from app.services.intake.email.mailbox import MailboxClient
from app.services.resolution import ResolverLike
from app.settings import Environment, Settings
from app.state import AppState
from testsupport.scripted import StaticResolver, scripted_purgers

if TYPE_CHECKING:
    from fastapi import FastAPI

REPO_ROOT = Path(__file__).resolve().parents[1]
EXIT_AFTER_HANDLING = 75


class SettingsForTests(Settings):
    """The service's settings and the two switches of tests."""

    # A JSON script for the scripted purgers (testsupport.scripted).
    testing_purgers: Path | None = None
    # `mailbox poll` exits right after handling its first message, before moving it.
    testing_exit_after_handling: bool = False

    @model_validator(mode="after")
    def _not_in_production(self) -> SettingsForTests:
        if self.testing_purgers is not None and self.environment is Environment.production:
            raise ValueError("DELETION_TESTING_PURGERS replaces real purgers: never in production")
        if self.testing_exit_after_handling and self.environment is Environment.production:
            raise ValueError(
                "DELETION_TESTING_EXIT_AFTER_HANDLING is for tests: never in production"
            )
        return self


class Doubles(TypedDict, total=False):
    """Keyword arguments of ``create_app`` and ``build_state`` that replace real parts."""

    purgers: Mapping[PurgerName, PurgerSlot]
    resolver: ResolverLike


def doubles(settings: Settings) -> Doubles:
    """The scripted purgers and the static resolver when the settings ask for them."""
    if not isinstance(settings, SettingsForTests) or settings.testing_purgers is None:
        return {}
    return {"purgers": scripted_purgers(settings.testing_purgers), "resolver": StaticResolver()}


def create_app() -> FastAPI:
    """uvicorn's app factory for ``serve``: settings from the environment, with doubles."""
    from app.main import create_app as create_service_app  # only ``serve`` needs the web app

    settings = SettingsForTests()
    return create_service_app(settings, **doubles(settings))


async def build_state(settings: Settings) -> AppState:
    """The state of the other commands: the doubles that the environment asks for."""
    return await wiring.build_state(settings, **doubles(SettingsForTests()))


def _exit_before_moving(client: MailboxClient, uid: str, folder: str) -> None:
    os._exit(EXIT_AFTER_HANDLING)


@contextlib.contextmanager
def doubles_installed(*, exit_after_handling: bool = False) -> Iterator[None]:
    """:mod:`app.cli`'s commands build the service with the doubles until the block ends."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(assembly, "build_state", build_state))
        stack.enter_context(
            mock.patch.object(assembly, "app_factory", "testsupport.cli:create_app")
        )
        if exit_after_handling:
            stack.enter_context(mock.patch.object(MailboxClient, "move", _exit_before_moving))
        yield


def command(*args: str) -> list[str]:
    """The argv of ``soundops-deletion ARGS`` built with the doubles."""
    return [sys.executable, "-m", "testsupport.cli", *args]


def environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with this repository on the module path, so that ``command`` runs anywhere."""
    paths = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def main() -> None:
    settings = SettingsForTests()
    with doubles_installed(exit_after_handling=settings.testing_exit_after_handling):
        app_cli.main()


if __name__ == "__main__":
    main()
