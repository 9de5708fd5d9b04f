"""The ``soundops-deletion`` command line: the command tree, assembled here in the order
``--help`` lists it.

- :mod:`.service`: ``serve``, ``worker``, ``migrate``, ``token``;
- :mod:`.requests`: ``requests list|show|watch|retry|cancel|approve|reject``, ``preview``;
- :mod:`.mailbox`: ``mailbox poll``;
- :mod:`.holds`: ``holds list``;
- :mod:`.checks`: ``datamap check``, ``retention check|apply``, ``receipt verify``;
- :mod:`.common`: what they share, and the :class:`~.common.Assembly` that builds the
  service (``python -m testsupport.cli`` puts the test doubles in there).
"""

from __future__ import annotations

import typer

from app.cli import checks, holds, mailbox, requests, service

cli = typer.Typer(
    name="soundops-deletion",
    help="Verified personal-data deletion for SoundOps.",
    no_args_is_help=True,
    add_completion=False,
)
cli.add_typer(requests.requests_cli, name="requests")
cli.add_typer(checks.datamap_cli, name="datamap")
cli.command()(service.serve)
cli.command()(service.worker)
cli.command()(service.migrate)
cli.command()(service.token)
cli.add_typer(mailbox.mailbox_cli, name="mailbox")
cli.add_typer(holds.holds_cli, name="holds")
cli.command()(requests.preview)
cli.add_typer(checks.receipt_cli, name="receipt")
cli.add_typer(checks.retention_cli, name="retention")


def main() -> None:
    cli(prog_name="soundops-deletion")
