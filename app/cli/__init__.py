"""The ``soundops-deletion`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from app import db
from app.auth import Scope, mint_token
from app.errors import ProblemError, validation_errors
from app.main import build_state, close_state, new_worker
from app.models import RequestKind, RequestStatus
from app.repository import RequestFilter, list_events
from app.retention_status import RetentionStatus
from app.routers.presenters import request_out
from app.schemas import CreateDeletionRequest
from app.services.datamap_check import CheckReport, check
from app.services.evidence import receipts, retention
from app.services.identities import lookup_hash
from app.services.intake.email.mailbox import MailboxError, MailboxPoller, PollReport
from app.services.preview import PreviewItem
from app.settings import Environment, Settings, get_settings, parse_duration
from app.state import AppState
from app.stores import StoreConfigError

T = TypeVar("T")
FINISHED_STATUSES = {"completed", "failed", "cancelled"}

cli = typer.Typer(
    name="soundops-deletion",
    help="Verified personal-data deletion for SoundOps.",
    no_args_is_help=True,
    add_completion=False,
)
requests_cli = typer.Typer(help="Read deletion requests.", no_args_is_help=True)
cli.add_typer(requests_cli, name="requests")
datamap_cli = typer.Typer(help="The data map of the SoundOps stores.", no_args_is_help=True)
cli.add_typer(datamap_cli, name="datamap")

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


def _settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        err.print("[red]Invalid configuration:[/red]")
        for error in exc.errors():
            name = "DELETION_" + "_".join(str(p) for p in error["loc"]).upper()
            err.print(f"  {name if error['loc'] else 'settings'}: {error['msg']}")
        raise typer.Exit(2) from exc


@contextlib.contextmanager
def _startup_errors() -> Iterator[None]:
    """A store that is unusable, or that production needs and does not have: one clear
    line naming it, and exit status 2 (no traceback)."""
    try:
        yield
    except StoreConfigError as exc:
        err.print(Text(f"Cannot start: {exc}", style="red"))
        raise typer.Exit(2) from exc


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def ensure_schema(settings: Settings) -> None:
    """Apply migrations on the embedded SQLite database; insist on them elsewhere."""
    if settings.is_sqlite:
        await db.upgrade(settings.database_url)
        return
    engine = db.create_engine(settings.database_url)
    try:
        current = await db.current_revision(engine)
    finally:
        await engine.dispose()
    if current != db.head_revision():
        err.print(
            f"[red]The tracking database is at revision {current or 'none'}, "
            f"the code needs {db.head_revision()}: run `soundops-deletion migrate` first.[/red]"
        )
        raise typer.Exit(1)


def _with_state(work: Callable[[AppState], Awaitable[T]]) -> T:
    settings = _settings()

    async def run() -> T:
        await ensure_schema(settings)
        state = await assembly.build_state(settings)
        try:
            return await work(state)
        finally:
            await close_state(state)

    try:
        with _startup_errors():
            return asyncio.run(run())
    except ProblemError as exc:
        err.print(f"[red]{exc.title}:[/red] {exc.detail}")
        for error in exc.extra.get("errors") or []:
            err.print(Text(f"  {'.'.join(error['loc'])}: {error['msg']}"))
        raise typer.Exit(1) from exc


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the HTTP API (and, unless DELETION_RUN_WORKER=false, a worker).

    In development (public, fixed secrets) only on a loopback address."""
    import uvicorn

    settings = _settings()
    if settings.environment is Environment.development and not is_loopback(host):
        err.print(
            Text(
                f"Refusing to listen on {host} in development: its secrets are public. "
                "Use 127.0.0.1, or configure a real deployment (DELETION_ENVIRONMENT=production).",
                style="red",
            )
        )
        raise typer.Exit(2)

    async def check() -> None:  # every start-up error before listening, in one clear line
        await ensure_schema(settings)
        await close_state(await assembly.build_state(settings))

    with _startup_errors():
        asyncio.run(check())
    # The client's address is the socket's: X-Forwarded-For is read by the app itself, and
    # only from DELETION_FORWARDED_ALLOW_IPS (uvicorn would trust it from loopback).
    uvicorn.run(
        assembly.app_factory,
        factory=True,
        host=host,
        port=port,
        log_level="info",
        proxy_headers=False,
    )


@cli.command()
def worker() -> None:
    """Run a worker on its own: claims due requests and runs their purgers until SIGTERM.

    On SIGTERM or Ctrl-C it stops claiming, lets running requests finish within
    DELETION_SHUTDOWN_GRACE_SECONDS, and hands the rest back to other workers.
    """
    settings = _settings()

    async def run() -> None:
        await ensure_schema(settings)
        with _startup_errors():
            state = await assembly.build_state(settings)
        the_worker = new_worker(state)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, the_worker.stop)
        try:
            await the_worker.run()
        finally:
            await close_state(state)

    asyncio.run(run())


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply the tracking database's migrations."""
    settings = _settings()
    asyncio.run(db.upgrade(settings.database_url, revision))
    console.print(f"tracking database migrated to {revision} ({db.head_revision()})")


@cli.command()
def token(
    scope: Annotated[
        list[Scope], typer.Option("--scope", "-s", help="Scope to grant; repeat for several.")
    ],
    subject: Annotated[str, typer.Option(help="The caller recorded on requests.")] = "operator",
    ttl: Annotated[str, typer.Option(help="Lifetime, e.g. 30m, 12h, 7d.")] = "1h",
) -> None:
    """Mint a JWT for local use from DELETION_JWT_SECRET."""
    settings = _settings()
    try:
        value = mint_token(
            settings, subject=subject, scopes=[s.value for s in scope], ttl=parse_duration(ttl)
        )
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    typer.echo(value)


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

    items = _with_state(work)
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(title=f"{len(items)} deletion request(s)")
    for column in ("id", "kind", "status", "created", "due", "tasks"):
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

    console.print(f"{request_id}: {_with_state(work)}")


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

    console.print(f"{request_id}: {_with_state(work)}")


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

    console.print(f"{request_id}: {_with_state(work)}")


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

    console.print(f"{request_id}: {_with_state(work)}")


mailbox_cli = typer.Typer(help="The privacy@ mailbox at DELETION_IMAP_URL.", no_args_is_help=True)
cli.add_typer(mailbox_cli, name="mailbox")


@mailbox_cli.command("poll")
def mailbox_poll(
    once: Annotated[
        bool, typer.Option("--once", help="Poll once and exit (non-zero if mail was left).")
    ] = False,
) -> None:
    """Handle the messages in the mailbox and move each to DELETION_IMAP_DONE_FOLDER.

    Each message is handled once by its Message-ID, as by POST /v1/inbound-email: a
    request filed from it waits for the owner's confirmation or an operator's review.
    Without --once, polls every DELETION_IMAP_POLL_SECONDS until SIGTERM or Ctrl-C.
    """
    settings = _settings()
    if settings.imap_url is None:
        err.print("[red]DELETION_IMAP_URL is not set.[/red]")
        raise typer.Exit(2)

    async def work(state: AppState) -> PollReport | None:
        poller = MailboxPoller(settings, state.inbound)
        if once:
            return await poller.poll_once()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await poller.run(stop)
        return None

    try:
        report = _with_state(work)
    except MailboxError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if report is not None:
        console.print(report.summary())
        if report.left:
            raise typer.Exit(1)


@cli.command()
def preview(
    kind: Annotated[RequestKind, typer.Argument(help="account, meta_data or instagram_disconnect")],
    identity: Annotated[
        list[str],
        typer.Argument(help="identity=value, e.g. site_name=the-band (twice for a disconnect)"),
    ],
) -> None:
    """What a request would delete and retain, per store; deletes and records nothing."""
    subject = dict(item.split("=", 1) for item in identity if "=" in item)
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
    for item in _with_state(work):
        table.add_row(
            item.purger,
            json.dumps(item.result.deleted),
            json.dumps(
                {k: {"count": r.count, "reason": r.reason} for k, r in item.result.retained.items()}
            ),
            item.skipped or "",
        )
    console.print(table)


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
        for column in ("store", "status", "attempts", "deleted", "error"):
            table.add_column(column)
        for task in data["tasks"]:
            table.add_row(
                task["purger"],
                task["status"],
                str(task["attempts"]),
                str(sum(task["deleted"].values())),
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

    status = _with_state(work)
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

    item = _with_state(work)
    if as_json:
        typer.echo(json.dumps(item, indent=2))
        return
    console.print(f"[bold]{item['id']}[/bold] {item['kind']} [bold]{item['status']}[/bold]")
    console.print(
        f"created {item['created_at']}  due {item['due_at']}  status page {item['status_url']}"
    )
    tasks = Table(title="tasks")
    for column in ("purger", "status", "attempts", "deleted", "retained", "error"):
        tasks.add_column(column)
    for t in item["tasks"]:
        tasks.add_row(
            t["purger"],
            t["status"],
            str(t["attempts"]),
            json.dumps(t["deleted"]),
            json.dumps(t["retained"]),
            t["error"] or "",
        )
    console.print(tasks)
    events = Table(title="events")
    for column in ("at", "type", "purger", "actor"):
        events.add_column(column)
    for e in item["events"]:
        events.add_row(e["at"][:23], e["type"], e["purger"] or "", e["actor"] or "")
    console.print(events)


receipt_cli = typer.Typer(help="Receipts of finished requests.", no_args_is_help=True)
cli.add_typer(receipt_cli, name="receipt")


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
    trusted = public_key or receipts.public_key_b64(receipts.private_key(_settings()).public_key())
    if receipts.verify(document, trusted):
        receipt = document["receipt"]
        console.print(
            f"[green]valid[/green]: request {receipt['request_id']} ({receipt['kind']}, "
            f"{receipt['status']}), key {receipts.key_id(trusted)}"
        )
        return
    err.print("[red]INVALID: the receipt was changed or not signed by the trusted key.[/red]")
    raise typer.Exit(1)


@datamap_cli.command("check")
def datamap_check() -> None:
    """Compare the data map with the live stores; fail on anything it does not cover."""

    async def work(state: AppState) -> CheckReport:
        try:
            return await check(state.datamap, state.stores, state.settings.mongodb_database)
        except Exception as exc:  # a store is down or refuses us: say which kind of error
            err.print(f"[red]A store could not be inspected ({type(exc).__name__}).[/red]")
            raise typer.Exit(2) from exc

    report = _with_state(work)
    console.print(f"data map {_settings().data_map or 'bundled'}: checked {report.checked}")
    for store in report.skipped:
        console.print(f"  {store}: not configured, not checked")
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


retention_cli = typer.Typer(
    help="SoundOps' automatic deletion: the MongoDB TTL indexes and the S3 lifecycle rule.",
    no_args_is_help=True,
)
cli.add_typer(retention_cli, name="retention")

_RETENTION_STYLE = {
    RetentionStatus.ok: "green",
    RetentionStatus.unsupported: "yellow",
    RetentionStatus.not_configured: "yellow",
}


def _show_retention(report: retention.RetentionReport, title: str, as_json: bool) -> None:
    """Print the report; exit 1 when an item is missing, wrong, unreachable or in error."""
    if as_json:
        items = [dataclasses.asdict(item) for item in report.items]
        typer.echo(json.dumps({"ok": report.ok, "items": items}, indent=2))
    else:
        table = Table(title=title)
        for column in ("store", "name", "status", "found"):
            table.add_column(column)
        for item in report.items:
            style = _RETENTION_STYLE.get(item.status, "bold red")
            table.add_row(
                item.store.value,
                Text(item.name),
                Text(item.status.value, style=style),
                Text(item.found or ""),
            )
        console.print(table)
        for item in report.items:
            lines = [("detail", item.detail), ("apply", item.action)]
            if item.status is not RetentionStatus.ok:
                lines.insert(0, ("expected", item.expected))
            for label, text in lines:
                if text:
                    console.print(
                        Text(f"{item.store.value} {item.name} {label}: {text}"), soft_wrap=True
                    )
        if report.ok:
            console.print(Text("retention rules in place (as far as the stores allow)", "green"))
        else:
            console.print(
                Text("retention rules missing, wrong or not checked: see above", "bold red")
            )
    if not report.ok:
        raise typer.Exit(1)


@retention_cli.command("check")
def retention_check(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Report the TTL indexes and the lifecycle rule against the contract's 30 days.

    Exit 1 when one is missing or wrong or a store is unreachable; a server that cannot
    have the rule ("unsupported by this server") or a store that is not configured is
    printed, and does not fail the check."""

    async def work(state: AppState) -> retention.RetentionReport:
        return await retention.check(state.stores, state.settings)

    _show_retention(_with_state(work), "retention check", as_json)


@retention_cli.command("apply")
def retention_apply(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Create the missing TTL indexes and lifecycle rule, fix wrong ones, then check again.

    Lifecycle rules of other prefixes are kept. Exit codes as for `retention check`."""

    async def work(state: AppState) -> retention.RetentionReport:
        return await retention.apply(state.stores, state.settings)

    _show_retention(_with_state(work), "retention apply", as_json)


def main() -> None:
    cli(prog_name="soundops-deletion")


if __name__ == "__main__":
    main()
