"""Checks an operator or an auditor runs: ``datamap check`` (the map against the live
stores), ``retention check|apply`` (the stores' own deletion rules; ``apply`` repairs what
``check`` finds) and ``receipt verify`` (a receipt's signature)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from app.cli.common import console, err, load_settings, with_state
from app.retention_status import RetentionStatus
from app.services.datamap_check import CheckReport, check
from app.services.evidence import receipts, retention
from app.state import AppState

datamap_cli = typer.Typer(help="The data map of the SoundOps stores.", no_args_is_help=True)
receipt_cli = typer.Typer(help="Receipts of finished requests.", no_args_is_help=True)
retention_cli = typer.Typer(
    help="SoundOps' automatic deletion: the MongoDB TTL indexes and the S3 lifecycle rule.",
    no_args_is_help=True,
)


@datamap_cli.command("check")
def datamap_check() -> None:
    """Compare the data map with the live stores; fail on anything it does not cover."""

    async def work(state: AppState) -> CheckReport:
        try:
            return await check(state.datamap, state.stores, state.settings.mongodb_database)
        except Exception as exc:  # a store is down or refuses us: say which kind of error
            err.print(f"[red]A store could not be inspected ({type(exc).__name__}).[/red]")
            raise typer.Exit(2) from exc

    report = with_state(work)
    console.print(f"data map {load_settings().data_map or 'bundled'}: checked {report.checked}")
    for store in report.skipped:
        console.print(f"  {store}: not configured, not checked")
    if not report.checked:
        err.print(
            "[red]Nothing was checked: no store is configured "
            "(DELETION_TARGET_POSTGRES_URL, DELETION_MONGODB_URL, S3).[/red]"
        )
        raise typer.Exit(1)
    if report.ok:
        console.print("[green]every table, collection and bucket is covered by the map[/green]")
        return
    table = Table(title=f"{len(report.findings)} problem(s)")
    for column in ("store", "name", "problem"):
        table.add_column(column)
    for finding in report.findings:
        table.add_row(finding.store, finding.name, finding.problem)
    console.print(table)
    raise typer.Exit(1)


_RETENTION_STYLE = {
    RetentionStatus.ok: "green",
    RetentionStatus.unsupported: "yellow",
    RetentionStatus.not_configured: "yellow",
}


def _show_retention(report: retention.RetentionReport, title: str, as_json: bool) -> None:
    """Print the report; exit 1 when an item is missing, wrong, unreachable or in error, or
    when nothing was checked (no store configured)."""
    if as_json:
        items = [dataclasses.asdict(item) for item in report.items]
        body = {"ok": report.ok and report.checked, "checked": report.checked, "items": items}
        typer.echo(json.dumps(body, indent=2))
    else:
        table = Table(title=title)
        for column in ("store", "name", "status", "mode", "found"):
            table.add_column(column)
        for item in report.items:
            style = _RETENTION_STYLE.get(item.status, "bold red")
            table.add_row(
                item.store.value,
                Text(item.name),
                Text(item.status.value, style=style),
                Text(item.mode.value if item.mode else ""),
                Text(item.found or ""),
            )
        console.print(table)
        for item in report.items:
            lines = [
                ("detail", item.detail),
                ("apply", item.action),
                ("mode", f"{item.mode.value}: {item.mode_reason}" if item.mode else None),
            ]
            if item.status is not RetentionStatus.ok:
                lines.insert(0, ("expected", item.expected))
            for label, text in lines:
                if text:
                    console.print(
                        Text(f"{item.store.value} {item.name} {label}: {text}"), soft_wrap=True
                    )
        if not report.checked:
            console.print(Text("nothing was checked: no store is configured", "bold red"))
        elif report.ok:
            console.print(Text("retention rules in place (as far as the stores allow)", "green"))
        else:
            console.print(
                Text("retention rules missing, wrong or not checked: see above", "bold red")
            )
    if not (report.ok and report.checked):
        raise typer.Exit(1)


@retention_cli.command("check")
def retention_check(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Report the TTL indexes and the lifecycle rule against the contract's 30 days.

    Exit 1 when one is missing or wrong, a store is unreachable, or no store is configured
    (nothing checked); a server that cannot have the rule ("unsupported by this server")
    or one store that is not configured is printed, and does not fail the check."""

    async def work(state: AppState) -> retention.RetentionReport:
        return await retention.check(state.stores, state.settings)

    _show_retention(with_state(work), "retention check", as_json)


@retention_cli.command("apply")
def retention_apply(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Create the missing TTL indexes and lifecycle rule, fix wrong ones, then check again.

    Lifecycle rules of other prefixes are kept. Exit codes as for `retention check`."""

    async def work(state: AppState) -> retention.RetentionReport:
        return await retention.apply(state.stores, state.settings)

    _show_retention(with_state(work), "retention apply", as_json)


@receipt_cli.command("verify")
def receipt_verify(
    path: Annotated[Path, typer.Argument(help="The receipt, as the API returned it (JSON).")],
    public_key: Annotated[
        str | None,
        typer.Option(help="Ed25519 public key (base64); default: this service's own key."),
    ] = None,
) -> None:
    """Check a receipt's signature: exit 0 when it is intact and signed by the trusted key."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        err.print(f"[red]Cannot read a JSON receipt from {path}.[/red]")
        raise typer.Exit(2) from exc
    trusted = public_key or receipts.public_key_b64(
        receipts.private_key(load_settings()).public_key()
    )
    if receipts.verify(document, trusted):
        receipt = document["receipt"]
        console.print(
            f"[green]valid[/green]: request {receipt['request_id']} ({receipt['kind']}, "
            f"{receipt['status']}), key {receipts.key_id(trusted)}"
        )
        return
    err.print("[red]INVALID: the receipt was changed or not signed by the trusted key.[/red]")
    raise typer.Exit(1)
