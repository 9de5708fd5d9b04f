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
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email import errors, policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from enum import StrEnum
from html.parser import HTMLParser

DEFAULT_MAX_BYTES = 1_048_576

MAX_CANDIDATES = 50
MAX_BODY_LINES = 30  # non-empty body lines looked at
MAX_HEADER_BYTES = 256 * 1024  # of the header block
MAX_BODY_BYTES = 128 * 1024  # of the body given to the parser: the text part comes first
MAX_TEXT_BYTES = 128 * 1024  # of the decoded text part: only its first lines matter
MAX_CANDIDATE_CHARS = 200
MAX_SUBJECT_CHARS = 2000
MAX_LINE_CHARS = 2000  # of one body line
MAX_HTML_CHARS = 32 * 1024  # of markup given to html.parser (the head, styles, scripts cut)
MAX_PARTS = 64  # MIME parts visited looking for the text part
MAX_DEPTH = 12  # multipart nesting followed
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
        body = _body_text(msg) if msg is not None else ""
        candidates = _candidates(after_kind, body)
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
    return _clean_text(_fix_surrogates(text[:MAX_SUBJECT_CHARS]))


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
        compact = "".join(_clean_text(value).split())
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


# ------------------------------------------------------------------------ the body


def _is_attachment(part: Message, *, top: bool = False) -> bool:
    """Disposition attachment; below the top level also any part with a file name
    (mail clients attach text files "inline" with a name)."""
    try:
        if part.get_content_disposition() == "attachment":
            return True
        return not top and part.get_filename() is not None
    except Exception:
        return True


def _text_parts(part: Message, depth: int, budget: list[int]) -> Iterator[Message]:
    """Inline text/plain and text/html parts of the message's own multipart tree."""
    budget[0] -= 1
    if budget[0] < 0 or _is_attachment(part, top=depth == 0):
        return
    try:
        ctype = part.get_content_type()
    except Exception:
        return
    if ctype in ("text/plain", "text/html"):
        yield part
    elif ctype.startswith("multipart/") and depth < MAX_DEPTH:
        payload = part.get_payload()
        if isinstance(payload, list):  # a multipart without boundary is a str: skipped
            for sub in payload:
                if isinstance(sub, Message):
                    yield from _text_parts(sub, depth + 1, budget)
    # message/rfc822, application/*, image/*, ...: never opened


def _body_text(msg: EmailMessage) -> str:
    try:
        parts = list(_text_parts(msg, 0, [MAX_PARTS]))
    except Exception:
        return ""
    # text/plain first, unless it is empty (some clients send an empty plain alternative)
    for part in parts[:3]:
        if part.get_content_type() == "text/plain" and (text := _decoded(part)).strip():
            return text
    for part in parts[:3]:
        if part.get_content_type() == "text/html" and (text := _decoded(part)).strip():
            return _html_to_text(text)
    return ""


# Codecs that are not charsets, or that interpret escapes: never trust a label naming them.
_REFUSED_CODECS = {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"}


def _lenient_base64(text: str) -> bytes:
    """Base64 with anything outside the alphabet dropped and the padding mended."""
    data = re.sub(r"[^A-Za-z0-9+/]", "", text[: MAX_TEXT_BYTES * 2])
    data = data[: len(data) - len(data) % 4 if len(data) % 4 == 1 else len(data)]
    return base64.b64decode(data + "=" * (-len(data) % 4))


def _decoded(part: Message) -> str:
    data: object = None
    try:
        if str(part.get("content-transfer-encoding", "")).strip().lower() == "base64":
            data = _lenient_base64(str(part.get_payload()))
        else:
            data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        try:
            data = str(part.get_payload()).encode("utf-8", "surrogateescape")
        except Exception:
            return ""
    data = data[:MAX_TEXT_BYTES]
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return _decode_bytes(data, charset)


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """The declared charset when it is known and fits, else UTF-8, else cp1252."""
    if charset:
        try:
            if codecs.lookup(charset).name not in _REFUSED_CODECS:
                return data.decode(charset)
        except (LookupError, ValueError, TypeError, UnicodeError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


class _HtmlText(HTMLParser):
    """HTML to plain lines: block elements break lines, blockquotes become "> " lines,
    scripts, styles and signatures are dropped."""

    _BLOCKS = frozenset(
        {
            "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
            "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li",
            "ol", "p", "pre", "section", "table", "tbody", "td", "th", "thead", "tr", "ul",
        }
    )  # fmt: skip
    _HIDDEN = frozenset({"head", "script", "style", "template", "title", "noscript"})
    _VOID = frozenset(
        {
            "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr",
        }
    )  # fmt: skip

    _MAX_OPEN = 256  # open elements tracked; deeper ones are read as if void

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._line: list[str] = []
        self._stack: list[str] = []  # open elements
        self._counts = {"drop": 0, "blockquote": 0, "pre": 0}  # of the open elements

    def _break(self) -> None:
        text = "".join(self._line).strip()
        self._line = []
        if text:
            self.lines.append("> " * self._counts["blockquote"] + text)

    @staticmethod
    def _kinds(tag: str, attrs: list[tuple[str, str | None]]) -> list[str]:
        """What an element counts as: dropped content, a quote, preformatted text."""
        marks = " ".join(str(v) for k, v in attrs if k in {"class", "id", "data-smartmail"})
        kinds = [tag] if tag in ("blockquote", "pre") else []
        if tag in _HtmlText._HIDDEN or "signature" in marks.lower():
            kinds.append("drop")
        return kinds

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self._break()
        if tag in self._VOID or len(self._stack) >= self._MAX_OPEN:
            return
        kinds = self._kinds(tag, attrs)
        self._stack.append(" ".join([tag, *kinds]))
        for kind in kinds:
            self._counts[kind] += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag in self._BLOCKS:
            self._break()
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i].split(" ", 1)[0] == tag:
                for entry in self._stack[i:]:
                    for kind in entry.split()[1:]:
                        self._counts[kind] -= 1
                del self._stack[i:]
                break

    def handle_data(self, data: str) -> None:
        if self._counts["drop"]:
            return
        if self._counts["pre"]:
            first, *rest = data.split("\n")
            self._line.append(first)
            for line in rest:
                self._break()
                self._line.append(line)
        else:
            self._line.append(re.sub(r"\s+", " ", data))

    def result(self) -> list[str]:
        self._break()
        return self.lines


def _without_elements(html: str, names: tuple[str, ...]) -> str:
    """The markup without the named elements and their content (linear: str.find only)."""
    lower = html.lower()
    kept: list[str] = []
    position = 0
    while True:
        starts = [(i, n) for n in names if (i := lower.find(f"<{n}", position)) >= 0]
        if not starts:
            break
        start, name = min(starts)
        end = lower.find(f"</{name}", start)
        kept.append(html[position:start])
        if end < 0:
            return "".join(kept)
        closing = lower.find(">", end)
        position = len(html) if closing < 0 else closing + 1
    kept.append(html[position:])
    return "".join(kept)


def _html_to_text(html: str) -> str:
    """Text lines of an HTML body. html.parser costs some microseconds a tag, so it reads
    at most MAX_HTML_CHARS of markup, after the head, styles and scripts are cut out."""
    html = _without_elements(html, ("head", "style", "script"))[:MAX_HTML_CHARS]
    parser = _HtmlText()
    with contextlib.suppress(Exception):  # keep what was read before broken markup
        for start in range(0, len(html), 8192):  # stop early: only the first lines count
            parser.feed(html[start : start + 8192])
            if len(parser.lines) > 3 * MAX_BODY_LINES:
                break
        parser.close()
    return "\n".join(parser.result())


# ------------------------------------------------------------------ the candidates

_REPLY_VERB = r"(?:wrote|schrieb|a\s+écrit|escribió|ha\s+scritto|schreef|escreveu|skrev|napisał)"
_ATTRIBUTION_START_RE = re.compile(r"^(?:on|am|le|el|il|op|em|den|på|w dniu)\s", re.IGNORECASE)
_ATTRIBUTION_VERB_RE = re.compile(r"\b" + _REPLY_VERB + r"\b", re.IGNORECASE)
_ORIGINAL_RE = re.compile(
    r"^-{2,}\s*(?:original message|ursprüngliche nachricht|message d'origine|"
    r"mensaje original|messaggio originale|oorspronkelijk bericht)\s*-{2,}$",
    re.IGNORECASE,
)
_FORWARD_RE = re.compile(
    r"^(?:-{2,}\s*(?:forwarded message|weitergeleitete nachricht|message transféré|"
    r"mensaje reenviado)\s*-{2,}|begin forwarded message:)$",
    re.IGNORECASE,
)
_HEADER_LINE_RE = re.compile(r"^[^\W\d][\w-]{0,24}\s?:\s", re.UNICODE)
_OUTLOOK_FROM_RE = re.compile(r"^(?:from|von|de|da|van|från|fra|od)\s?:\s", re.IGNORECASE)
_OUTLOOK_NEXT_RE = re.compile(
    r"^(?:sent|date|gesendet|datum|envoyé|enviado|inviato|verzonden|skickat|sendt|to|an|à|"
    r"para|subject|betreff|objet|asunto)\s?:",
    re.IGNORECASE,
)
_GREETING_RE = re.compile(
    r"^(?:hi|hello|hey|hallo|dear|good (?:morning|afternoon|evening|day)|guten (?:tag|morgen|"
    r"abend)|liebe[rs]?|sehr geehrte[rs]?|bonjour|salut|hola|ciao|hej|moin|servus|greetings|"
    r"to whom it may concern)\b",
    re.IGNORECASE,
)
_CLOSING_RE = re.compile(
    r"^(?:thanks|thank you|many thanks|thx|cheers|best|best regards|kind regards|warm regards|"
    r"regards|sincerely|yours|all the best|mit freundlichen grüßen|freundliche grüße|"
    r"viele grüße|liebe grüße|beste grüße|grüße|gruß|mfg|lg|danke|vielen dank|cordialement|"
    r"bien à vous|merci|saludos|atentamente|gracias|met vriendelijke groet|hälsningar|"
    r"med vennlig hilsen)\b",
    re.IGNORECASE,
)
_HEADER_KEYS = frozenset(
    {
        "from", "to", "cc", "bcc", "date", "sent", "subject", "reply-to", "return-path",
        "message-id", "von", "an", "gesendet", "betreff", "datum", "de", "à", "objet",
        "envoyé", "asunto", "enviado", "para",
    }
)  # fmt: skip
# Typographic quotes and dashes, written as escapes: \u2018 \u2019 \u201c \u201d \u201e « »
_LSQUO, _RSQUO, _LDQUO, _RDQUO, _BDQUO = "\u2018", "\u2019", "\u201c", "\u201d", "\u201e"
_DASHES = "\u2013\u2014"
_OPEN_QUOTES = f"\"'{_LDQUO}{_BDQUO}«{_LSQUO}"
_CLOSE_QUOTES = f"\"'{_RDQUO}{_LDQUO}»{_RSQUO}"
_KEY_VALUE_RE = re.compile(rf"^([^\W\d_][\w '{_RSQUO}()./-]{{0,39}}?)\s*[:=]\s*(?!//)(.+)$")
_NAMED_RE = re.compile(
    r"\b(?:is called|is named|is|are|called|named|ist|heißt|lautet)\s+(.+)$",
    re.IGNORECASE,
)
_QUOTED_RE = re.compile(
    rf"[\"{_LDQUO}{_BDQUO}«]([^\"{_LDQUO}{_RDQUO}{_BDQUO}«»]{{2,120}})[\"{_RDQUO}{_LDQUO}»]"
)
_TOKEN_SPLIT_RE = re.compile(rf"[\s,;:!?()\[\]{{}}<>\"{_LDQUO}{_RDQUO}{_BDQUO}«»|/\\*=]+")
# Words of a request that are never what it names (compared casefolded).
_STOPWORDS = frozenset(
    {
        "a", "about", "above", "account", "accounts", "after", "all", "also", "am", "an",
        "and", "any", "are", "as", "at", "be", "been", "bitte", "by", "can", "could", "data",
        "das", "date", "dass", "de", "del", "delete", "deleted", "deleting", "deletion",
        "der", "des", "die", "dies", "diese", "du", "e-mail", "ein", "eine", "einen", "email",
        "erase", "everything", "facebook", "for", "from", "fb", "gdpr", "hereby", "i", "ich",
        "ig", "im", "in", "instagram", "info", "information", "is", "it", "its", "je",
        "kindly", "konto", "like", "löschen", "mail", "me", "meine", "meinen", "meta", "my",
        "name", "named", "of", "on", "or", "our", "page", "please", "profile", "remove",
        "request", "requested", "seite", "site", "soundops", "that", "the", "this", "to",
        "und", "username", "user", "we", "website", "with", "would", "you", "your",
    }
)  # fmt: skip
_NOT_NAMES = _STOPWORDS | _HEADER_KEYS


def _clean_text(text: str) -> str:
    """NFC, no control or invisible formatting characters, whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        if category in ("Cc", "Zl", "Zp", "Cs") or ch in "\u0085\xa0":
            out.append(" ")
        elif category == "Cf" and ch not in "\u200c\u200d":
            continue  # zero-width, direction overrides, BOM
        else:
            out.append(ch)
    return " ".join("".join(out).split())


_OPENERS = {")": "(", "]": "[", '"': '"', _RDQUO: _LDQUO, "»": "«", _RSQUO: _LSQUO, "'": "'"}


def _tidy(text: str) -> str:
    """A candidate: cleaned, without bullets, wrapping quotes or trailing punctuation."""
    text = _clean_text(text)
    for _ in range(4):
        before = text
        text = text.lstrip(f"-*\u2022\xb7>{_DASHES}#").strip().rstrip(".,;:!?\u2026").strip()
        if text[-1:] in _OPENERS and _OPENERS[text[-1]] not in text[:-1]:
            text = text[:-1].strip()
        if text[:1] in f"({_OPEN_QUOTES}[" and not any(c in text[1:] for c in f"){_CLOSE_QUOTES}]"):
            text = text[1:].strip()
        if text[:1] in _OPEN_QUOTES and text[-1:] in _CLOSE_QUOTES and len(text) > 2:
            text = text[1:-1].strip()
        if text == before:
            break
    return text[:MAX_CANDIDATE_CHARS] if any(c.isalnum() for c in text) else ""


@dataclass
class _Found:
    """Candidates by how much they are worth: named values, lines, likely names, words."""

    named: list[str]
    lines: list[str]
    names: list[str]
    words: list[str]

    @classmethod
    def empty(cls) -> _Found:
        return cls([], [], [], [])


def _tokens(text: str, found: _Found) -> None:
    for piece in _TOKEN_SPLIT_RE.split(text):
        at = piece.startswith("@")
        token = piece.lstrip(f"@'{_LSQUO}.-").rstrip(f".'{_RSQUO}-\u2026")
        if not 2 <= len(token) <= 64 or not any(c.isalnum() for c in token):
            continue
        if "@" in token:  # an e-mail address
            found.names.append(token)
            continue
        if (
            at
            or any(c in token for c in "._-")
            or (any(c.isdigit() for c in token) and any(c.isalpha() for c in token))
        ):
            found.names.append(token)
            host = re.fullmatch(r"([\w-]+)\.soundops\.[a-z]{2,}", token, re.IGNORECASE)
            if host:  # the-band.soundops.example names the site the-band
                found.names.append(host.group(1))
        elif len(token) >= 3 and token.casefold() not in _NOT_NAMES:
            found.words.append(token)


# A label anywhere in a line ("... my Facebook Page: Foxtrot Live. Thanks"): the word
# before a colon or "=" (not a URL's "://", not a time's "10:30").
_LABEL_RE = re.compile(r"(?<![\w@/.:-])([^\W\d_][\w'-]{0,39})\s?[:=]\s*(?!//)")
# Where a clause ends inside a value: sentence or clause punctuation before a space, a
# dash between spaces, an opening parenthesis.
_CLAUSE_END_RE = re.compile(rf"[.!?;,\u2026]+(?=\s)|\s[-{_DASHES}]+(?=\s)|\s(?=\()")
MAX_CLAUSE_CUTS = 6
MAX_LABELS = 8  # per line


def _clauses(value: str) -> list[str]:
    """A named value as written, then cut at each clause end, longest first: "Foxtrot
    Live. Thanks a lot" gives itself and "Foxtrot Live" (a name may hold a clause end,
    "St. Louis Blues", so the longer readings come first and the matching takes the
    first that is on file)."""
    cuts = [m.start() for m in _CLAUSE_END_RE.finditer(value)][:MAX_CLAUSE_CUTS]
    return [value, *(value[:cut] for cut in reversed(cuts))]


def _labelled(line: str) -> list[str]:
    """What follows each label of a line, up to the next label (then cut into clauses)."""
    labels = [m for m in _LABEL_RE.finditer(line) if m.group(1).casefold() not in _HEADER_KEYS]
    values = []
    for index, label in enumerate(labels):
        end = labels[index + 1].start() if index + 1 < len(labels) else len(line)
        values += _clauses(line[label.end() : end])
    return values


def _from_line(line: str, found: _Found, *, whole: bool = True) -> None:
    key_value = _KEY_VALUE_RE.match(line)
    if key_value and key_value.group(1).strip().casefold() not in _HEADER_KEYS:
        found.named.extend(_clauses(key_value.group(2)))
    found.named.extend(_labelled(line))
    named = _NAMED_RE.search(line)
    if named:
        found.named.extend(_clauses(named.group(1)))
    found.named.extend(match.group(1) for match in _QUOTED_RE.finditer(line))
    if whole:
        found.lines.append(line)
    _tokens(line, found)


def _is_attribution(line: str) -> bool:
    return line.endswith(":") and _ATTRIBUTION_VERB_RE.search(line) is not None


def _body_lines(text: str) -> Iterator[str]:
    """The request's own lines: above the signature and any quoted or replied-to text."""
    lines = text.splitlines()
    seen = 0
    forward_headers = False
    for index, raw_line in enumerate(lines):
        if raw_line.rstrip() == "--":  # the signature separator "-- " (often stripped)
            return
        line = _clean_text(raw_line[:MAX_LINE_CHARS])
        if not line:
            forward_headers = False
            continue
        seen += 1
        if seen > MAX_BODY_LINES:
            return
        if line.startswith(">"):
            continue
        following = next(
            (
                _clean_text(lines[i][:MAX_LINE_CHARS])
                for i in range(index + 1, len(lines))
                if lines[i].strip()
            ),
            "",
        )
        if _ORIGINAL_RE.match(line):
            return
        if _is_attribution(line) and (
            _ATTRIBUTION_START_RE.match(line) or "@" in line or line.count(" ") <= 1
        ):
            return  # "On <date>, <someone> wrote:", "Am <date> schrieb <someone>:"
        if _ATTRIBUTION_START_RE.match(line) and _is_attribution(following):
            return  # the same, wrapped over two lines
        if _FORWARD_RE.match(line):
            forward_headers = True
            continue
        if forward_headers and _HEADER_LINE_RE.match(line):
            continue
        if _OUTLOOK_FROM_RE.match(line) and _OUTLOOK_NEXT_RE.match(following):
            return
        words = len(line.split())
        if _GREETING_RE.match(line) and (words <= 3 or (words <= 6 and line[-1] in ",!:")):
            continue
        if _CLOSING_RE.match(line) and words <= 5:
            return  # what follows a closing is the sender's name and signature
        yield line


def _candidates(after_kind: str, body: str) -> tuple[str, ...]:
    subject = _Found.empty()
    rest = _clean_text(after_kind).lstrip(f" :-{_DASHES}|/#")
    if rest:
        subject.named.append(rest)
        _from_line(rest, subject, whole=False)
    text = _Found.empty()
    for line in _body_lines(body):
        _from_line(line, text)
    ordered = (
        subject.named,
        text.named,
        text.lines,
        subject.names,
        text.names,
        subject.words,
        text.words,
    )
    return _unique(c for group in ordered for c in group)


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    result: list[str] = []
    for value in values:
        candidate = _tidy(value)
        key = candidate.casefold()
        if candidate and key not in seen:
            seen.add(key)
            result.append(candidate)
            if len(result) >= MAX_CANDIDATES:
                break
    return tuple(result)
