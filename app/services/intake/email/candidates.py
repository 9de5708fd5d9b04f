"""What an inbound e-mail might name (site, Instagram username, Page name): candidates,
best first, from what follows the kind in the subject line and from the first lines of
the body (greetings, quotes, signatures and forwarded headers left out)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from app.services.intake.email.body import MAX_BODY_LINES, clean_text

MAX_CANDIDATES = 50
MAX_CANDIDATE_CHARS = 200
MAX_LINE_CHARS = 2000  # of one body line


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


_OPENERS = {")": "(", "]": "[", '"': '"', _RDQUO: _LDQUO, "»": "«", _RSQUO: _LSQUO, "'": "'"}


def _tidy(text: str) -> str:
    """A candidate: cleaned, without bullets, wrapping quotes or trailing punctuation."""
    text = clean_text(text)
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
        line = clean_text(raw_line[:MAX_LINE_CHARS])
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
                clean_text(lines[i][:MAX_LINE_CHARS])
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


def find_candidates(after_kind: str, body: str) -> tuple[str, ...]:
    subject = _Found.empty()
    rest = clean_text(after_kind).lstrip(f" :-{_DASHES}|/#")
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
