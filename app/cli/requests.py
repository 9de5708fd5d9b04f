"""``requests list|show|watch|retry|cancel|approve|reject`` and ``preview``: reading,
following and managing deletion requests."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any

import typer
from pydantic import TypeAdapter, ValidationError
from rich.live import Live
from rich.table import Table

from app.cli.common import console, err, with_state
from app.errors import validation_errors
from app.models import RequestKind, RequestStatus
from app.repository import RequestFilter, list_events
from app.routers.presenters import request_out
from app.schemas import CreateDeletionRequest
from app.services.identities import lookup_hash
from app.services.preview import PreviewItem
from app.state import AppState

FINISHED_STATUSES = {"completed", "failed", "cancelled"}

requests_cli = typer.Typer(help="Read deletion requests.", no_args_is_help=True)


@requests_cli.command("list")
def requests_list(
    status: Annotated[RequestStatus | None, typer.Option(help="Only this status.")] = None,
    kind: Annotated[RequestKind | None, typer.Option(help="Only this kind.")] = None,
    overdue: Annotated[bool, typer.Option(help="Only open requests past due.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    subject: Annotated[
        str | None,
        typer.Option(help="identity=value: requests that named or resolved to it (hashed)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """List deletion requests, newest first."""

    async def work(state: AppState) -> list[dict[str, Any]]:
        try:
            subject_hash = (
                lookup_hash(state.settings.effective_hash_key, subject) if subject else None
            )
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from exc
        rows, _ = await state.requests.list(
            RequestFilter(status=status, kind=kind, overdue=overdue, subject_hash=subject_hash),
            limit=limit,
            cursor=None,
        )
        return [request_out(r, state.requests.status_url(r)).model_dump(mode="json") for r in rows]

    items = with_state(work)
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(title=f"{len(items)} deletion request(s)")
    # Whole ids, never cut or wrapped: an operator copies them into `show`, `retry`, ...
    table.add_column("id", no_wrap=True, min_width=36)
    for column in ("kind", "status", "created", "due", "tasks"):
        table.add_column(column)
    for item in items:
        tasks = " ".join(f"{t['purger']}:{t['status']}" for t in item["tasks"])
        table.add_row(
            item["id"],
            item["kind"],
            item["status"],
            item["created_at"][:19],
            item["due_at"][:10],
            tasks,
        )
    console.print(table)


@requests_cli.command("retry")
def requests_retry(
    request_id: Annotated[uuid.UUID, typer.Argument(help="A failed request's id.")],
    actor: Annotated[str, typer.Option(help="Who retries (recorded).")] = "cli",
) -> None:
    """Run a failed request's failed tasks again."""

    async def work(state: AppState) -> str:
        request = await state.requests.retry(request_id, actor=actor)
        return request.status

    console.print(f"{request_id}: {with_state(work)}")


@requests_cli.command("cancel")
def requests_cancel(
    request_id: Annotated[uuid.UUID, typer.Argument(help="A request that has not started.")],
    reason: Annotated[str | None, typer.Option(help="Why (shown to operators).")] = None,
    actor: Annotated[str, typer.Option(help="Who cancels (recorded).")] = "cli",
) -> None:
    """Cancel a pending (or unconfirmed) request."""

    async def work(state: AppState) -> str:
        request = await state.requests.cancel(request_id, actor=actor, reason=reason)
        return request.status

    console.print(f"{request_id}: {with_state(work)}")


@requests_cli.command("approve")
def requests_approve(
    request_id: Annotated[uuid.UUID, typer.Argument(help="A request from e-mail in review.")],
    subject_json: Annotated[
        str | None,
        typer.Option(
            "--subject-json",
            help='Carry out this subject instead, e.g. \'{"site_name": "the-band"}\'.',
        ),
    ] = None,
    actor: Annotated[str, typer.Option(help="Who approves (recorded).")] = "cli",
) -> None:
    """Approve a request from e-mail that needs review: it becomes pending and runs."""
    subject: dict[str, Any] | None = None
    if subject_json is not None:
        try:
            subject = json.loads(subject_json)
        except ValueError as exc:
            err.print("[red]--subject-json is not JSON.[/red]")
            raise typer.Exit(2) from exc
        if not isinstance(subject, dict):
            err.print("[red]--subject-json must be a JSON object.[/red]")
            raise typer.Exit(2)

    async def work(state: AppState) -> str:
        request = await state.email_requests.approve(request_id, operator=actor, subject=subject)
        return request.status

    console.print(f"{request_id}: {with_state(work)}")


@requests_cli.command("reject")
def requests_reject(
    request_id: Annotated[uuid.UUID, typer.Argument(help="A request from e-mail not started.")],
    reason: Annotated[str | None, typer.Option(help="Why (recorded as the status reason).")] = None,
    actor: Annotated[str, typer.Option(help="Who rejects (recorded).")] = "cli",
) -> None:
    """Reject a request from e-mail (in review or awaiting confirmation): nothing is deleted."""

    async def work(state: AppState) -> str:
        request = await state.email_requests.reject(request_id, operator=actor, reason=reason)
        return request.status

    console.print(f"{request_id}: {with_state(work)}")


@requests_cli.command("watch")
def requests_watch(
    request_id: Annotated[uuid.UUID, typer.Argument(help="The request to follow.")],
    interval: Annotated[float, typer.Option(help="Seconds between looks.")] = 1.0,
    timeout: Annotated[
        float, typer.Option(help="Give up watching after this many seconds.")
    ] = 3600,
) -> None:
    """Follow a request's progress, store by store, until it is finished (exit 1 if failed)."""

    def render(data: dict[str, Any]) -> Table:
        table = Table(title=f"{data['id']}  {data['kind']}  [bold]{data['status']}[/bold]")
        for column in ("store", "status", "attempts", "deleted", "next attempt", "error"):
            table.add_column(column)
        for task in data["tasks"]:
            table.add_row(
                task["purger"],
                task["status"],
                str(task["attempts"]),
                str(sum(task["deleted"].values())),
                (task["next_attempt_at"] or "")[:19],
                task["error"] or "",
            )
        return table

    async def work(state: AppState) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        with Live(console=console, auto_refresh=False) as live:
            while True:
                request = await state.requests.get(request_id)
                data = request_out(request, state.requests.status_url(request)).model_dump(
                    mode="json"
                )
                live.update(render(data), refresh=True)
                if data["status"] in FINISHED_STATUSES:
                    return str(data["status"])
                if asyncio.get_running_loop().time() > deadline:
                    return "still " + str(data["status"])
                await asyncio.sleep(interval)

    status = with_state(work)
    console.print(f"{request_id}: {status}")
    if status != "completed":
        raise typer.Exit(1)


@requests_cli.command("show")
def requests_show(
    request_id: Annotated[uuid.UUID, typer.Argument(help="The request's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
) -> None:
    """Show one request: its tasks and its event log."""

    async def work(state: AppState) -> dict[str, Any]:
        request = await state.requests.get(request_id)
        async with state.sessionmaker() as session:
            events = await list_events(session, request_id)
        out = request_out(request, state.requests.status_url(request)).model_dump(mode="json")
        out["events"] = [
            {
                "at": e.at.isoformat(),
                "type": e.type,
                "purger": e.purger,
                "actor": e.actor,
                "detail": e.detail,
            }
            for e in events
        ]
        return out

    item = with_state(work)
    if as_json:
        typer.echo(json.dumps(item, indent=2))
        return
    console.print(f"[bold]{item['id']}[/bold] {item['kind']} [bold]{item['status']}[/bold]")
    console.print(
        f"created {item['created_at']}  due {item['due_at']}  status page {item['status_url']}"
    )
    tasks = Table(title="tasks")
    for column in ("purger", "status", "attempts", "deleted", "retained", "next attempt", "error"):
        tasks.add_column(column)
    for t in item["tasks"]:
        tasks.add_row(
            t["purger"],
            t["status"],
            str(t["attempts"]),
            json.dumps(t["deleted"]),
            json.dumps(t["retained"]),
            (t["next_attempt_at"] or "")[:19],
            t["error"] or "",
        )
    console.print(tasks)
    events = Table(title="events")
    for column in ("at", "type", "purger", "actor"):
        events.add_column(column)
    for e in item["events"]:
        events.add_row(e["at"][:23], e["type"], e["purger"] or "", e["actor"] or "")
    console.print(events)


def preview(
    kind: Annotated[RequestKind, typer.Argument(help="account, meta_data or instagram_disconnect")],
    identity: Annotated[
        list[str],
        typer.Argument(help="identity=value, e.g. site_name=the-band (twice for a disconnect)"),
    ],
) -> None:
    """What a request would delete and retain, per store; deletes and records nothing."""
    malformed = [item for item in identity if "=" not in item]
    if malformed:
        err.print(
            f"[red]Each identity is identity=value (e.g. site_name=the-band); "
            f"not {', '.join(repr(m) for m in malformed)}.[/red]"
        )
        raise typer.Exit(2)
    subject = dict(item.split("=", 1) for item in identity)
    try:
        body = TypeAdapter(CreateDeletionRequest).validate_python(
            {"kind": kind, "subject": subject}
        )
    except ValidationError as exc:
        err.print(f"[red]Not a valid {kind} subject:[/red] {validation_errors(exc.errors())}")
        raise typer.Exit(2) from exc

    async def work(state: AppState) -> list[PreviewItem]:
        return await state.preview.preview(kind, body.subject.identities())

    table = Table(title=f"preview of a {kind} request")
    for column in ("store", "would delete", "would retain", "skipped"):
        table.add_column(column)
    for item in with_state(work):
        table.add_row(
            item.purger,
            json.dumps(item.result.deleted),
            json.dumps(
                {k: {"count": r.count, "reason": r.reason} for k, r in item.result.retained.items()}
            ),
            item.skipped or "",
        )
    console.print(table)
