"""``DELETION_IMAP_URL``: where the privacy@ mailbox is, and how the password is protected.

- ``imaps://user:password@host:993/INBOX``: TLS from the first byte.
- ``imap://user:password@host:143/INBOX``: STARTTLS, required: a server that does not
  offer it is refused before the password is sent.
- ``imap://...?tls=none``: plain text, the password in clear; refused in production
  (for a local test server only).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

TLS_MODES = ("starttls", "none")


@dataclass(frozen=True)
class ImapLocation:
    host: str
    port: int
    tls: bool
    user: str
    password: str
    folder: str
    starttls: bool = True

    @property
    def encrypted(self) -> bool:
        """Whether the password is sent over TLS (implicit, or after STARTTLS)."""
        return self.tls or self.starttls

    @classmethod
    def parse(cls, url: str) -> ImapLocation:
        """``imap://user:password@host:port/FOLDER[?tls=none]`` or ``imaps://...``
        (folder: INBOX)."""
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps"):
            raise ValueError("DELETION_IMAP_URL must start with imap:// or imaps://")
        if not parts.hostname or parts.username is None or parts.password is None:
            raise ValueError("DELETION_IMAP_URL needs a user, a password and a host")
        query = parse_qs(parts.query)
        unknown = set(query) - {"tls"}
        if unknown:
            raise ValueError("DELETION_IMAP_URL takes one parameter: tls=starttls|none")
        mode = query.get("tls", ["starttls"])[-1].lower()
        if mode not in TLS_MODES:
            raise ValueError("DELETION_IMAP_URL: tls must be starttls or none")
        tls = parts.scheme == "imaps"
        if tls and mode == "none":
            raise ValueError("DELETION_IMAP_URL: imaps:// is always TLS; tls=none is for imap://")
        return cls(
            host=parts.hostname,
            port=parts.port or (993 if tls else 143),
            tls=tls,
            user=unquote(parts.username),
            password=unquote(parts.password),
            folder=unquote(parts.path.lstrip("/")) or "INBOX",
            starttls=not tls and mode == "starttls",
        )
