"""The mailbox password never travels in clear unless a test server asks for it
(issue 14, item 7): ``imap://`` means STARTTLS, required, against a real Dovecot."""

from __future__ import annotations

from typing import Any

import pytest

from app.imap_url import ImapLocation
from app.services.intake.email.mailbox import MailboxClient, MailboxError


def test_imap_without_starttls_on_the_server_is_refused_before_login(
    dovecot_server: Any,
) -> None:
    """The test Dovecot offers no TLS at all: an ``imap://`` URL (STARTTLS) must stop
    before LOGIN, where the old code logged in in clear."""
    dovecot_server.reset("privacy")
    client = MailboxClient(
        ImapLocation.parse(dovecot_server.url("privacy", tls="starttls")), timeout=10
    )
    with pytest.raises(MailboxError, match="does not offer STARTTLS; the password was not sent"):
        client.connect("Processed")
    assert client._conn is None  # closed, not left half-open

    # The same server with plain text asked for explicitly (tests only): logs in.
    plain = MailboxClient(ImapLocation.parse(dovecot_server.url("privacy")), timeout=10)
    plain.connect("Processed")
    try:
        assert plain.uids() == []
    finally:
        plain.close()
