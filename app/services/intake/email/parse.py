"""An inbound e-mail, read for intake: which kind of request, who sent it, what it names.

``parse_message`` reads the headers and the first inline text part of the message's own
multipart tree (text/plain preferred, else text/html turned into text). Attachments,
non-text parts and attached messages (``message/rfc822``) are never opened or decoded,
so a request named inside a forwarded message or an archive is never taken from it.

It never raises, whatever the bytes (malformed headers, unknown charsets, broken
base64 or quoted-printable), and keeps nothing: the caller decides what to store. It
logs nothing either: message content must not reach the logs.

The result is a set of *candidates* (what the message might name), best first; the
caller matches them case-insensitively against what is on file and decides. Parsing is
deliberately generous there, and strict where it matters for trust: a ``From`` header
that does not hold exactly one well-formed address gives no sender at all.

The headers are read here; the body's text in ``body``, the candidates in ``candidates``.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from email import errors, policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from enum import StrEnum

from app.services.intake.email.body import MAX_PARTS, body_text, clean_text
from app.services.intake.email.candidates import find_candidates

DEFAULT_MAX_BYTES = 1_048_576

MAX_HEADER_BYTES = 256 * 1024  # of the header block
MAX_BODY_BYTES = 128 * 1024  # of the body given to the parser: the text part comes first
MAX_SUBJECT_CHARS = 2000
# Lines starting with "--" (boundaries) given to the parser, so at most that many parts
# and levels of nesting: each part costs the stdlib parser a Message and the parse of its
# headers (up to a millisecond), each level a check of every line below it. Bounding only
# the parts visited is not enough (20,000 parts in 128 KiB cost seconds). The text part
# comes first in real mail; what follows the cut is never read.
MAX_BOUNDARY_LINES = MAX_PARTS

_PARSER = BytesParser(policy=policy.default)


class MailKind(StrEnum):
    account = "account"
    meta_data = "meta_data"


@dataclass(frozen=True)
class ParsedMail:
    """What intake needs of one message, and nothing of its content beyond candidates."""

    message_id: str
    """The Message-ID without angle brackets and whitespace; when the message has none,
    ``"sha256:" + hex digest`` of its raw bytes (so a re-fetch of the same bytes dedupes)."""
    message_id_present: bool
    kind: MailKind | None
    """From the subject line; None when it names neither kind."""
    candidates: tuple[str, ...]
    """What the message might name (site, Instagram username, Page name), best first,
    original case, no duplicates (case-insensitive), no control characters."""
    sender: str | None
    """The one ``From`` address, lower-cased; None when missing, malformed or several."""
    reply_to: tuple[str, ...]
    """``Reply-To`` addresses, lower-cased: for reports only, never to send to."""
    automatic: bool
    """Sent by a machine (auto-reply, list, bounce): never answer it."""
    dmarc_fail: bool
    """The trusted receiving server recorded ``dmarc=fail``."""
    oversize: bool
    """Larger than the limit: only the headers were read, candidates are empty."""


def parse_message(
    raw: bytes, *, authserv_id: str | None, max_bytes: int = DEFAULT_MAX_BYTES
) -> ParsedMail:
    """Parse one raw message (RFC 5322 bytes). Never raises."""
    oversize = len(raw) > max_bytes
    msg = _parse(raw, headers_only=oversize)

    subject = _subject(msg)
    kind, after_kind = _kind(subject)
    message_id = _message_id(msg)
    candidates: tuple[str, ...] = ()
    if not oversize:
        body = body_text(msg) if msg is not None else ""
        candidates = find_candidates(after_kind, body)
    return ParsedMail(
        message_id=message_id or "sha256:" + hashlib.sha256(raw).hexdigest(),
        message_id_present=message_id is not None,
        kind=kind,
        candidates=candidates,
        sender=_sender(msg),
        reply_to=_reply_to(msg),
        automatic=_automatic(msg),
        dmarc_fail=_dmarc_fail(msg, authserv_id),
        oversize=oversize,
    )


# ------------------------------------------------------------------------- parsing


def _parse(raw: bytes, *, headers_only: bool) -> EmailMessage | None:
    """The stdlib parse of the headers and, unless headers_only, of the body's start.

    The stdlib parser costs about a microsecond a line, so it sees at most
    MAX_BODY_BYTES of the body (the text part comes first in real mail; attachments
    after it are never read anyway), with runs of empty lines shortened, and at most
    MAX_BOUNDARY_LINES boundary lines (so at most that many parts and levels of nesting).
    """
    head, body = _split_head(raw)
    if not headers_only:
        body = _EMPTY_LINES_RE.sub(b"\r\n\r\n", body[:MAX_BODY_BYTES])
        head += _first_boundaries(body)
    # e.g. RecursionError on absurd nesting: fall back to the headers alone
    with contextlib.suppress(Exception):
        return _PARSER.parsebytes(head, headersonly=headers_only)
    try:
        return _PARSER.parsebytes(_split_head(raw)[0], headersonly=True)
    except Exception:
        return None


_EMPTY_LINES_RE = re.compile(rb"(?:\r?\n){3,}")
_BOUNDARY_LINE_RE = re.compile(rb"^--", re.MULTILINE)


def _first_boundaries(body: bytes) -> bytes:
    """The body up to its (MAX_BOUNDARY_LINES + 1)-th line that starts with "--"."""
    for count, match in enumerate(_BOUNDARY_LINE_RE.finditer(body), 1):
        if count > MAX_BOUNDARY_LINES:
            return body[: match.start()]
    return body


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    """The header block with the empty line ending it (at most MAX_HEADER_BYTES), and
    the body."""
    head = raw[:MAX_HEADER_BYTES]
    ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := head.find(sep)) >= 0]
    if not ends:
        return head + b"\r\n\r\n", b""
    index, length = min(ends)
    return raw[: index + length], raw[index + length :]


def _raw_values(msg: Message | None, name: str) -> list[str]:
    """A header's values as they came (unfolded), without any decoding that could fail."""
    if msg is None:
        return []
    try:
        found = [str(value) for key, value in msg.raw_items() if key.lower() == name]
    except Exception:
        return []
    return [_fix_surrogates(" ".join(value.split())) for value in found]


def _fix_surrogates(text: str) -> str:
    """Undo the parser's surrogate escapes of 8-bit header bytes (UTF-8, else cp1252)."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


# --------------------------------------------------------------------- the headers

_ACCOUNT_RE = re.compile(r"account[\s_-]*deletion[\s_-]*request", re.IGNORECASE)
_META_RE = re.compile(r"meta[\s_-]*data[\s_-]*deletion[\s_-]*request", re.IGNORECASE)


def _subject(msg: EmailMessage | None) -> str:
    if msg is None:
        return ""
    try:
        value = msg.get("subject")
        text = str(value) if value is not None else ""
    except Exception:
        values = _raw_values(msg, "subject")
        text = values[0] if values else ""
    # Encoded words can carry CR/LF (a header-injection attempt): never let them through.
    return clean_text(_fix_surrogates(text[:MAX_SUBJECT_CHARS]))


def _kind(subject: str) -> tuple[MailKind | None, str]:
    """The kind the subject names (the first phrase found) and the text after it."""
    found = [
        (match.start(), match.end(), kind)
        for kind, pattern in ((MailKind.account, _ACCOUNT_RE), (MailKind.meta_data, _META_RE))
        if (match := pattern.search(subject))
    ]
    if not found:
        return None, ""
    _, end, kind = min(found)
    return kind, subject[end:]


def _message_id(msg: EmailMessage | None) -> str | None:
    for value in _raw_values(msg, "message-id"):
        compact = "".join(clean_text(value).split())
        bracketed = re.search(r"<([^<>]+)>", compact)
        ident = bracketed.group(1) if bracketed else compact.strip("<>")
        if ident:
            return ident
    return None


_ADDR_RE = re.compile(r"[!-~]+@[!-~]+")  # printable ASCII, one @ at least, no spaces
_BAD_ADDRESS_DEFECTS = (
    errors.InvalidHeaderDefect,
    errors.HeaderMissingRequiredValue,
    errors.NonASCIILocalPartDefect,
)


def _addresses(msg: EmailMessage | None, name: str) -> list[str] | None:
    """The addr-specs of every `name` header, lower-cased; None when any is malformed.

    Strict on purpose: a From that a mail server and this parser could read differently
    (``mara@x.example <evil@y>``) must not look like the owner's address.
    """
    if msg is None:
        return []
    try:
        headers = msg.get_all(name) or []
        result: list[str] = []
        for header in headers:
            defects = getattr(header, "defects", ())
            if any(isinstance(d, _BAD_ADDRESS_DEFECTS) for d in defects):
                return None
            for address in getattr(header, "addresses", ()):
                spec = str(address.addr_spec)
                if not _ADDR_RE.fullmatch(spec) or spec.startswith("<"):
                    return None
                result.append(spec.lower())
        return result
    except Exception:
        return None


def _sender(msg: EmailMessage | None) -> str | None:
    """Exactly one From header holding exactly one well-formed address, else None."""
    if len(_raw_values(msg, "from")) != 1:
        return None
    found = _addresses(msg, "from")
    return found[0] if found is not None and len(found) == 1 else None


def _reply_to(msg: EmailMessage | None) -> tuple[str, ...]:
    found = _addresses(msg, "reply-to")
    return tuple(dict.fromkeys(found)) if found else ()


def _first_token(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _automatic(msg: EmailMessage | None) -> bool:
    """Auto-replies, lists, bulk mail and bounces (RFC 3834 and common practice)."""

    def first(name: str) -> list[str]:
        return [_first_token(v) for v in _raw_values(msg, name)]

    if any(v != "no" for v in first("auto-submitted")):
        return True
    if any(v in {"bulk", "list", "junk", "auto_reply"} for v in first("precedence")):
        return True
    if any("".join(v.split()) in {"", "<>"} for v in _raw_values(msg, "return-path")):
        return True
    if _raw_values(msg, "list-id"):
        return True
    if any(v not in {"no", "false"} for v in first("x-autoreply") + first("x-autorespond")):
        return True
    suppress = ",".join(_raw_values(msg, "x-auto-response-suppress")).lower()
    if re.search(r"\b(all|oof|autoreply)\b", suppress):
        return True
    with contextlib.suppress(Exception):
        if msg is not None and msg.get_content_type() == "multipart/report":
            return True  # a bounce or another delivery report
    sender = _sender(msg)
    return sender is not None and sender.split("@", 1)[0] == "mailer-daemon"


_COMMENT_RE = re.compile(r"\([^()]*\)")
_DMARC_FAIL_RE = re.compile(r"(?:^|;)\s*dmarc\s*=\s*fail\b", re.IGNORECASE)


def _dmarc_fail(msg: EmailMessage | None, authserv_id: str | None) -> bool:
    """An Authentication-Results header of the trusted server says dmarc=fail (RFC 8601).

    Headers of other servers are ignored: anyone can write one.
    """
    if not authserv_id:
        return False
    trusted = authserv_id.strip().lower()
    for value in _raw_values(msg, "authentication-results"):
        for _ in range(5):  # comments may nest
            value = _COMMENT_RE.sub(" ", value)
        server, _, results = value.partition(";")
        ids = server.split()
        if ids and ids[0].lower() == trusted and _DMARC_FAIL_RE.search(";" + results):
            return True
    return False
