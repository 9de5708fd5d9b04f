"""``mailbox poll``: the privacy@ mailbox, handled by the service's own intake."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from app.cli.common import console, err, load_settings, with_state
from app.logging import configure_logging
from app.services.intake.email.mailbox import MailboxError, MailboxPoller, PollReport
from app.state import AppState

mailbox_cli = typer.Typer(help="The privacy@ mailbox at DELETION_IMAP_URL.", no_args_is_help=True)


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
    settings = load_settings()
    if settings.imap_url is None:
        err.print("[red]DELETION_IMAP_URL is not set.[/red]")
        raise typer.Exit(2)

    configure_logging(settings)

    async def work(state: AppState) -> PollReport | None:
        poller = MailboxPoller(settings, state.inbound)
        if once:
            return await poller.poll_once()
        from app.metrics_server import serving_metrics  # FastAPI: only the long-running poller

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with serving_metrics(settings, state.tracking_db, lambda: poller.healthy):
            await poller.run(stop)
        return None

    try:
        report = with_state(work)
    except MailboxError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if report is not None:
        console.print(report.summary())
        if report.left:
            raise typer.Exit(1)
