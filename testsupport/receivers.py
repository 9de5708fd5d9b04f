"""Real receivers on 127.0.0.1 for confirmations: an HTTP webhook receiver and an SMTP server."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """Records every POST; answers ``status`` (200 by default)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.deliveries: list[Delivery] = []
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                outer.attempts += 1
                if outer.status < 300:
                    outer.deliveries.append(Delivery(dict(self.headers.items()), body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/deletion"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@dataclass
class _Handler:
    messages: list[tuple[str, list[str], Message]] = field(default_factory=list)
    # Recipients refused with 550 (compared case-insensitively), as a mailbox that is full.
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.lower() in {r.lower() for r in self.refuse}:
            return "550 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
        )
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpSink:
    """aiosmtpd on a free port (or ``port``: a server that comes back where it was);
    ``messages`` holds (from, recipients, message)."""

    def __init__(self, port: int | None = None) -> None:
        self.handler = _Handler()
        self.port = port or free_port()
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[tuple[str, list[str], Message]]:
        return self.handler.messages

    def close(self) -> None:
        """Stop the server (again: nothing)."""
        if self._controller._thread is not None:
            self._controller.stop()
