"""The privacy@ mailbox over IMAP: each message handled once, then moved to the done folder.

``MailboxPoller.poll_once`` lists the folder of ``DELETION_IMAP_URL``, hands every
message to :class:`~app.services.intake.email.inbound.InboundMail` (the same handling as
``POST /v1/inbound-email``) and moves it to ``DELETION_IMAP_DONE_FOLDER`` once handled.
A message that could not be handled (a database or the mail server down) stays where
it is and is tried again at the next poll. Handling is idempotent by ``Message-ID``, so
a message fetched twice - e.g. after the poller died between filing and moving it - is
recognised as a duplicate and only moved. Messages over 1 MiB are not downloaded: their
headers are read and they are recorded as ``too_large``.

imaplib is blocking: every IMAP call runs in a thread; one connection per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import re
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field

import structlog

from app import metrics
from app.errors import ServiceUnavailable
from app.imap_url import ImapLocation
from app.services.intake.email.inbound import MAX_MESSAGE_BYTES, InboundMail
from app.settings import Settings

log = structlog.get_logger(__name__)

_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class MailboxError(Exception):
    """The mailbox could not be read (no personal data in the message)."""


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MailboxClient:
    """One IMAP session (blocking calls; run them in a thread)."""

    def __init__(self, location: ImapLocation, timeout: float = 30.0) -> None:
        self._location = location
        self._timeout = timeout
        self._conn: imaplib.IMAP4 | None = None

    @property
    def conn(self) -> imaplib.IMAP4:
        if self._conn is None:
            raise MailboxError("not connected")
        return self._conn

    def connect(self, done_folder: str) -> None:
        where = self._location
        try:
            if where.tls:
                context = ssl.create_default_context()
                self._conn = imaplib.IMAP4_SSL(
                    where.host, where.port, ssl_context=context, timeout=self._timeout
                )
            else:
                self._conn = imaplib.IMAP4(where.host, where.port, timeout=self._timeout)
                if where.starttls:
                    if "STARTTLS" not in self.conn.capabilities:
                        raise MailboxError(
                            "the mail server does not offer STARTTLS; the password was not "
                            "sent (use imaps://, or tls=none for a local test server)"
                        )
                    self.conn.starttls(ssl_context=ssl.create_default_context())
            self.conn.login(where.user, where.password)
            status, _ = self.conn.select(_quote(where.folder))
            if status != "OK":
                raise MailboxError(f"the folder {where.folder!r} cannot be selected")
            status, _ = self.conn.create(_quote(done_folder))  # NO when it exists: fine
        except MailboxError:
            self.close()
            raise
        except (imaplib.IMAP4.error, OSError) as exc:
            self.close()
            raise MailboxError(f"IMAP connection failed ({type(exc).__name__})") from exc

    def uids(self) -> list[str]:
        status, data = self.conn.uid("SEARCH", "ALL")
        if status != "OK":
            raise MailboxError("IMAP SEARCH failed")
        return [uid.decode() for uid in data[0].split()] if data and data[0] else []

    def size(self, uid: str) -> int | None:
        status, data = self.conn.uid("FETCH", uid, "(RFC822.SIZE)")
        for item in data if status == "OK" else []:
            found = _SIZE.search(item if isinstance(item, bytes) else item[0])
            if found:
                return int(found.group(1))
        return None  # gone meanwhile

    def fetch(self, uid: str, *, headers_only: bool = False) -> bytes | None:
        what = "(BODY.PEEK[HEADER])" if headers_only else "(BODY.PEEK[])"
        status, data = self.conn.uid("FETCH", uid, what)
        for item in data if status == "OK" else []:
            if isinstance(item, tuple):
                return bytes(item[1])
        return None

    def move(self, uid: str, folder: str) -> None:
        quoted = _quote(folder)
        if "MOVE" in self.conn.capabilities:
            status, _ = self.conn.uid("MOVE", uid, quoted)
        else:
            status, _ = self.conn.uid("COPY", uid, quoted)
            if status == "OK":
                self.conn.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
                self.conn.expunge()
        if status != "OK":
            raise MailboxError("IMAP could not move a handled message")

    def close(self) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            self._conn.logout()
        self._conn = None


@dataclass
class PollReport:
    outcomes: Counter[str] = field(default_factory=Counter)
    moved: int = 0
    left: int = 0  # not handled this time (tried again at the next poll)

    def summary(self) -> str:
        handled = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())) or "none"
        return f"handled: {handled}; moved {self.moved}; left for the next poll {self.left}"


class MailboxPoller:
    def __init__(self, settings: Settings, inbound: InboundMail) -> None:
        if settings.imap_url is None:
            raise ValueError("DELETION_IMAP_URL is not set")
        self._settings = settings
        self._location = ImapLocation.parse(settings.imap_url.get_secret_value())
        self._inbound = inbound
        self.last_tick = time.monotonic()

    @property
    def healthy(self) -> bool:
        """The poll loop is turning (a poll that fails, IMAP down, still turns it: a
        restart would not help; ``deletion_email_polls_total{result="failed"}`` says so)."""
        limit = max(300.0, self._settings.imap_poll_seconds * 3)
        return time.monotonic() - self.last_tick < limit

    async def poll_once(self) -> PollReport:
        report = PollReport()
        client = MailboxClient(self._location)
        done = self._settings.imap_done_folder
        await asyncio.to_thread(client.connect, done)
        try:
            uids = await asyncio.to_thread(client.uids)
            for position, uid in enumerate(uids):
                try:
                    outcome = await self._one(client, uid)
                except ServiceUnavailable as exc:
                    # A database or the mail server is down: the rest would fail alike.
                    log.warning("mailbox_poll_paused", reason=exc.detail)
                    report.left += len(uids) - position
                    break
                except (imaplib.IMAP4.error, OSError):
                    raise
                except Exception as exc:
                    # This message cannot be handled: it stays in the folder for an operator
                    # (metric outcome="error"), and the others go on.
                    log.error("mailbox_message_not_handled", error=type(exc).__name__)
                    report.left += 1
                    continue
                if outcome is None:
                    continue
                report.outcomes[outcome] += 1
                await asyncio.to_thread(client.move, uid, done)
                report.moved += 1
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(f"IMAP failed during the poll ({type(exc).__name__})") from exc
        finally:
            await asyncio.to_thread(client.close)
        log.info("mailbox_polled", moved=report.moved, left=report.left, **report.outcomes)
        return report

    async def _one(self, client: MailboxClient, uid: str) -> str | None:
        size = await asyncio.to_thread(client.size, uid)
        if size is None:
            return None
        oversize = size > MAX_MESSAGE_BYTES
        raw = await asyncio.to_thread(client.fetch, uid, headers_only=oversize)
        if raw is None:
            return None
        result = await self._inbound.handle(raw, via="imap", oversize=oversize)
        return result.outcome.value

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``DELETION_IMAP_POLL_SECONDS`` until ``stop`` is set; a failed poll
        is logged and tried again at the next interval."""
        while not stop.is_set():
            self.last_tick = time.monotonic()
            try:
                await self.poll_once()
            except MailboxError as exc:
                metrics.MAILBOX_POLLS.labels(result="failed").inc()
                log.warning("mailbox_poll_failed", error=str(exc))
            else:
                metrics.MAILBOX_POLLS.labels(result="ok").inc()
                metrics.MAILBOX_LAST_SUCCESS.set_to_current_time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.imap_poll_seconds)
