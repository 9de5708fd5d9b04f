"""``DELETION_IMAP_URL``: where the privacy@ mailbox is."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class ImapLocation:
    host: str
    port: int
    tls: bool
    user: str
    password: str
    folder: str

    @classmethod
    def parse(cls, url: str) -> ImapLocation:
        """``imap://user:password@host:port/FOLDER`` or ``imaps://...`` (folder: INBOX)."""
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps"):
            raise ValueError("DELETION_IMAP_URL must start with imap:// or imaps://")
        if not parts.hostname or parts.username is None or parts.password is None:
            raise ValueError("DELETION_IMAP_URL needs a user, a password and a host")
        tls = parts.scheme == "imaps"
        return cls(
            host=parts.hostname,
            port=parts.port or (993 if tls else 143),
            tls=tls,
            user=unquote(parts.username),
            password=unquote(parts.password),
            folder=unquote(parts.path.lstrip("/")) or "INBOX",
        )
