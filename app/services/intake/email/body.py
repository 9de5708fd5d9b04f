"""The text of an inbound e-mail: its first inline text part (text/plain preferred, else
text/html turned into text lines), decoded whatever its charset or transfer encoding
claims, and cleaned (``clean_text``). Never raises; attachments and attached messages are
never opened."""

from __future__ import annotations

import base64
import codecs
import contextlib
import re
import unicodedata
from collections.abc import Iterator
from email.message import EmailMessage, Message
from html.parser import HTMLParser

MAX_BODY_LINES = 30  # non-empty body lines looked at
MAX_TEXT_BYTES = 128 * 1024  # of the decoded text part: only its first lines matter
MAX_HTML_CHARS = 32 * 1024  # of markup given to html.parser (the head, styles, scripts cut)
MAX_PARTS = 64  # MIME parts visited looking for the text part
MAX_DEPTH = 12  # multipart nesting followed


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


def body_text(msg: EmailMessage) -> str:
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


def clean_text(text: str) -> str:
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
