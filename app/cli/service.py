"""Running and setting up the service: ``serve``, ``worker``, ``migrate``, ``token``."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from typing import Annotated

import typer
from rich.text import Text

from app import db
from app.auth import Scope, mint_token
from app.cli.common import (
    assembly,
    console,
    ensure_schema,
    err,
    load_settings,
    startup_errors,
)
from app.logging import configure_logging
from app.settings import Environment, parse_duration
from app.wiring import close_state, new_worker


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="DELETION_PORT", help="Port to listen on.", min=1, max=65535)
    ] = 8000,
) -> None:
    """Run the HTTP API (and, unless DELETION_RUN_WORKER=false, a worker).

    In development (public, fixed secrets) only on a loopback address."""
    import uvicorn

    settings = load_settings()
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

    with startup_errors():
        asyncio.run(check())
    configure_logging(settings)  # uvicorn's own lines too (log_config=None keeps ours)
    # The client's address is the socket's: X-Forwarded-For is read by the app itself, and
    # only from DELETION_FORWARDED_ALLOW_IPS (uvicorn would trust it from loopback).
    uvicorn.run(
        assembly.app_factory,
        factory=True,
        host=host,
        port=port,
        log_config=None,
        log_level=settings.log_level.value,
        proxy_headers=False,
    )


def worker() -> None:
    """Run a worker on its own: claims due requests and runs their purgers until SIGTERM.

    On SIGTERM or Ctrl-C it stops claiming, lets running requests finish within
    DELETION_SHUTDOWN_GRACE_SECONDS, and hands the rest back to other workers.
    """
    from app.metrics_server import serving_metrics  # FastAPI: for the long-running commands only

    settings = load_settings()
    configure_logging(settings)

    async def run() -> None:
        await ensure_schema(settings)
        with startup_errors():
            state = await assembly.build_state(settings)
        the_worker = new_worker(state)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, the_worker.stop)
        try:
            async with serving_metrics(settings, state.tracking_db, lambda: the_worker.healthy):
                await the_worker.run()
        finally:
            await close_state(state)

    asyncio.run(run())


def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply the tracking database's migrations."""
    settings = load_settings()
    asyncio.run(db.upgrade(settings.database_url, revision))
    console.print(f"tracking database migrated to {revision} ({db.head_revision()})")


def token(
    scope: Annotated[
        list[Scope], typer.Option("--scope", "-s", help="Scope to grant; repeat for several.")
    ],
    subject: Annotated[str, typer.Option(help="The caller recorded on requests.")] = "operator",
    ttl: Annotated[str, typer.Option(help="Lifetime, e.g. 30m, 12h, 7d.")] = "1h",
) -> None:
    """Mint a JWT for local use from DELETION_JWT_SECRET."""
    settings = load_settings()
    try:
        value = mint_token(
            settings, subject=subject, scopes=[s.value for s in scope], ttl=parse_duration(ttl)
        )
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    typer.echo(value)
