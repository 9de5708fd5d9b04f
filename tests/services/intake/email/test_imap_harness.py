"""The Dovecot test server works: real IMAP over a real socket (imaplib), as the poller
will use it."""

from __future__ import annotations

import imaplib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.services.intake.email.corpus import load_corpus
from testsupport.harness.services import (
    DovecotServer,
    ServiceError,
    _processes_inside,
    port_accepts,
    start_dovecot,
    wait_until,
)

MESSAGE = (
    b"From: Mara <mara@lunar-echoes.example>\r\n"
    b"To: privacy@soundops.example\r\n"
    b"Subject: Account Deletion Request\r\n"
    b"Message-ID: <harness-1@lunar-echoes.example>\r\n"
    b"\r\n"
    b"Site: lunar-echoes\r\n"
)


def test_url_names_user_password_port_and_inbox(dovecot_server: DovecotServer) -> None:
    url = urlsplit(dovecot_server.url())
    assert url.scheme == "imap"
    assert (url.hostname, url.port) == ("127.0.0.1", dovecot_server.port)
    assert url.username == "privacy"
    assert unquote(url.password or "") == dovecot_server.password
    assert url.path == "/INBOX"
    assert urlsplit(dovecot_server.url("someone-else")).username == "someone-else"


@pytest.mark.slow
def test_login_needs_the_password() -> None:
    # Its own server: after a failed login Dovecot delays the next ones from the same
    # address for a while (anvil's auth penalty), which would slow every later test.
    server = start_dovecot()
    try:
        url = urlsplit(server.url())
        imap = imaplib.IMAP4(url.hostname or "", url.port or 0, timeout=10)
        try:
            typ, _ = imap.login(url.username or "", unquote(url.password or ""))
            assert typ == "OK"
        finally:
            imap.logout()
        imap = imaplib.IMAP4(url.hostname or "", url.port or 0, timeout=10)
        try:
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                imap.login("privacy", "not-the-password")
        finally:
            imap.logout()
    finally:
        server.close()


def test_append_then_list_returns_the_same_bytes(
    dovecot_server: DovecotServer, imap_mailbox: str
) -> None:
    corpus = {case.name: case.raw for case in load_corpus()}
    raws = [MESSAGE, corpus["13-page-name-utf8-body.eml"], corpus["21-unknown-charset-body.eml"]]
    for raw in raws:
        dovecot_server.append(raw)
    assert dovecot_server.list_messages("INBOX") == raws
    assert dovecot_server.list_messages("INBOX") == raws  # listing is read-only


def test_append_lf_message_is_stored_with_crlf(
    dovecot_server: DovecotServer, imap_mailbox: str
) -> None:
    dovecot_server.append(MESSAGE.replace(b"\r\n", b"\n"))
    assert dovecot_server.list_messages() == [MESSAGE]


def test_append_to_a_new_folder_creates_it(
    dovecot_server: DovecotServer, imap_mailbox: str
) -> None:
    assert dovecot_server.list_messages("Processed") == []
    dovecot_server.append(MESSAGE, folder="Processed")
    assert dovecot_server.folders() == ["INBOX", "Processed"]
    assert dovecot_server.list_messages("Processed") == [MESSAGE]
    assert dovecot_server.list_messages("INBOX") == []


def test_users_have_separate_mailboxes(dovecot_server: DovecotServer, imap_mailbox: str) -> None:
    dovecot_server.reset("other")
    dovecot_server.append(MESSAGE, user="other")
    assert dovecot_server.list_messages(user="other") == [MESSAGE]
    assert dovecot_server.list_messages(user="privacy") == []


def test_reset_empties_every_folder(dovecot_server: DovecotServer, imap_mailbox: str) -> None:
    dovecot_server.append(MESSAGE)
    dovecot_server.append(MESSAGE, folder="Processed")
    dovecot_server.append(MESSAGE, folder="Processed.2025")  # "." separates levels
    assert len(dovecot_server.folders()) == 3

    dovecot_server.reset()
    assert dovecot_server.folders() == ["INBOX"]
    assert dovecot_server.list_messages() == []
    dovecot_server.append(MESSAGE)  # still usable afterwards
    assert dovecot_server.list_messages() == [MESSAGE]


def test_imap_mailbox_fixture_starts_empty(
    dovecot_server: DovecotServer, imap_mailbox: str
) -> None:
    assert imap_mailbox == dovecot_server.url("privacy")
    assert dovecot_server.folders() == ["INBOX"]
    assert dovecot_server.list_messages() == []


def test_a_client_can_move_a_message_like_the_poller(
    dovecot_server: DovecotServer, imap_mailbox: str
) -> None:
    dovecot_server.append(MESSAGE)
    with dovecot_server.session() as imap:
        imap.create("Processed")
        imap.select("INBOX")
        typ, data = imap.uid("SEARCH", "ALL")
        (uid,) = data[0].split()
        typ, _ = imap.uid("MOVE", uid.decode(), "Processed")
        assert typ == "OK"
    assert dovecot_server.list_messages("INBOX") == []
    assert dovecot_server.list_messages("Processed") == [MESSAGE]


@pytest.mark.slow
def test_own_server_stop_start_keeps_port_and_mail_and_close_removes_all() -> None:
    server = start_dovecot(password="p@ss:w/rd")
    try:
        assert urlsplit(server.url()).password == "p%40ss%3Aw%2Frd"
        server.append(MESSAGE)
        port, pid = server.port, server.pid
        assert pid is not None
        server.stop()
        assert not port_accepts(port)
        server.start()
        assert server.port == port and server.pid != pid
        assert server.list_messages() == [MESSAGE]
    finally:
        server.close()
    assert not port_accepts(port)
    assert not server.base.exists()
    with pytest.raises(ServiceError, match="closed"):
        server.start()


@pytest.mark.slow
def test_close_ends_every_dovecot_process() -> None:
    server = start_dovecot()
    try:
        server.append(MESSAGE)  # also starts login and imap processes
        helpers = _processes_inside(server.base)
        assert server.pid in helpers
        assert len(helpers) >= 4  # master, log, config, auth, ... (all with cwd in the run dir)
    finally:
        server.close()
    wait_until(lambda: not any(_running(pid) for pid in helpers), 10, "dovecot to stop")


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its new parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_missing_binary_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOVECOT_BIN", str(tmp_path / "no-dovecot"))
    with pytest.raises(ServiceError, match="dovecot-imapd"):
        DovecotServer()
