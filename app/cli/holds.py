"""``holds list``: the legal holds in force (and, with ``--all``, released ones)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from app.cli.common import console, with_state
from app.models import utcnow
from app.routers.presenters import hold_out
from app.schemas import HoldOut
from app.state import AppState

holds_cli = typer.Typer(help="Legal holds.", no_args_is_help=True)


@holds_cli.command("list")
def holds_list(
    include_released: Annotated[
        bool, typer.Option("--all", help="Also released holds (subject hashed, no reason).")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """List legal holds, newest first, with their age."""

    async def work(state: AppState) -> list[HoldOut]:
        rows, _ = await state.holds.list(
            include_released=include_released, limit=limit, cursor=None
        )
        return [hold_out(row) for row in rows]

    items = with_state(work)
    if as_json:
        typer.echo(json.dumps([item.model_dump(mode="json") for item in items], indent=2))
        return
    now = utcnow()
    table = Table(title=f"{len(items)} legal hold(s)")
    for column in ("id", "subject", "reason", "by", "placed", "age (days)", "released"):
        table.add_column(column)
    for item in items:
        table.add_row(
            str(item.id),
            ", ".join(f"{name}={value}" for name, value in item.subject.items()),
            item.reason or "",
            item.created_by,
            f"{item.created_at:%Y-%m-%d %H:%M}",
            f"{(now - item.created_at).total_seconds() / 86400:.1f}",
            f"{item.released_at:%Y-%m-%d %H:%M}" if item.released_at else "",
        )
    console.print(table)
