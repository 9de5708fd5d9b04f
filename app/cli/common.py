"""What every command shares: the consoles, the settings, and the service built for one
command (:func:`with_state`) by the :data:`assembly`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from app import db
from app.errors import ProblemError
from app.settings import Settings, get_settings
from app.state import AppState
from app.stores import StoreConfigError
from app.wiring import build_state, close_state

T = TypeVar("T")

console = Console()
err = Console(stderr=True)


@dataclasses.dataclass
class Assembly:
    """How the commands build the service: ``build_state`` for the one-off commands, the
    worker and the mailbox poller, ``app_factory`` (an import string, for uvicorn) for
    ``serve``. A deployment keeps these; ``python -m testsupport.cli`` puts the test
    doubles in (for tests that start real processes)."""

    build_state: Callable[[Settings], Awaitable[AppState]] = build_state
    app_factory: str = "app.main:create_app"


assembly = Assembly()


def load_settings() -> Settings:
    """The settings from the environment; invalid ones: each named, and exit status 2."""
    try:
        return get_settings()
    except ValidationError as exc:
        err.print("[red]Invalid configuration:[/red]")
        for error in exc.errors():
            name = "DELETION_" + "_".join(str(p) for p in error["loc"]).upper()
            err.print(f"  {name if error['loc'] else 'settings'}: {error['msg']}")
        raise typer.Exit(2) from exc


@contextlib.contextmanager
def startup_errors() -> Iterator[None]:
    """A store that is unusable, or that production needs and does not have: one clear
    line naming it, and exit status 2 (no traceback)."""
    try:
        yield
    except StoreConfigError as exc:
        err.print(Text(f"Cannot start: {exc}", style="red"))
        raise typer.Exit(2) from exc


async def ensure_schema(settings: Settings) -> None:
    """Apply migrations on the embedded SQLite database; insist on them elsewhere."""
    if settings.is_sqlite:
        await db.upgrade(settings.database_url)
        return
    tracking_db = db.create_engine(settings.database_url)
    try:
        current = await db.current_revision(tracking_db)
    finally:
        await tracking_db.dispose()
    if current != db.head_revision():
        err.print(
            f"[red]The tracking database is at revision {current or 'none'}, "
            f"the code needs {db.head_revision()}: run `soundops-deletion migrate` first.[/red]"
        )
        raise typer.Exit(1)


def with_state(work: Callable[[AppState], Awaitable[T]]) -> T:
    """Run ``work`` on the service built for this command, then close it. A
    :class:`ProblemError` becomes its title and detail, and exit status 1."""
    settings = load_settings()

    async def run() -> T:
        await ensure_schema(settings)
        state = await assembly.build_state(settings)
        try:
            return await work(state)
        finally:
            await close_state(state)

    try:
        with startup_errors():
            return asyncio.run(run())
    except ProblemError as exc:
        err.print(f"[red]{exc.title}:[/red] {exc.detail}")
        for error in exc.extra.get("errors") or []:
            err.print(Text(f"  {'.'.join(error['loc'])}: {error['msg']}"))
        raise typer.Exit(1) from exc
