"""The e-mail corpus: corpus/*.eml beside this file and what each must give (expected.yaml).

Files are stored with LF line ends and loaded as they travel: CRLF. A line
``@@CORPUS-FILL-TO-BYTES N@@`` is replaced by deterministic base64 lines so that the
whole message is exactly N bytes (the 2 MiB message is not committed at full size).

Keys of an expected entry (see expected.yaml's header for their meaning): kind,
candidate, sender, automatic, dmarc_fail, message_id_present, outcome, review_reason,
reply; optional: absent (names that must NOT be among the candidates), reply_to,
after (the file that must have been handled first, for a duplicate).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
EXPECTED_FILE = CORPUS_DIR / "expected.yaml"
TRUSTED_AUTHSERV_ID = "mx.soundops.example"

OUTCOMES = {"awaiting_confirmation", "needs_review", "ignored", "duplicate", "too_large"}
REVIEW_REASONS = {"sender_not_on_file", "no_match", "several_tenants", "dmarc_fail"}
REQUIRED_KEYS = {
    "kind",
    "candidate",
    "sender",
    "automatic",
    "dmarc_fail",
    "message_id_present",
    "outcome",
    "review_reason",
    "reply",
}
OPTIONAL_KEYS = {"absent", "reply_to", "after"}

_FILL_RE = re.compile(rb"^@@CORPUS-FILL-TO-BYTES (\d+)@@\r\n", re.MULTILINE)


@dataclass(frozen=True)
class CorpusCase:
    name: str
    raw: bytes
    expected: dict[str, Any]

    def __str__(self) -> str:  # pytest ids
        return self.name


def to_crlf(data: bytes) -> bytes:
    """Bare LF line ends -> CRLF (CRLF ends stay)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def _fill_lines(size: int) -> bytes:
    """Exactly `size` bytes of base64-looking lines (at most 76 characters, each ending
    in CRLF), deterministic."""
    if size < 3:
        raise ValueError("a fill needs at least 3 bytes")
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = bytearray()
    counter = 0
    while len(out) < size:
        remaining = size - len(out)
        width = min(76, remaining - 2)
        if 0 < remaining - width - 2 < 3:  # leave room for one more whole line
            width -= 3
        digest = hashlib.sha256(counter.to_bytes(8, "big")).digest() * 3
        out += bytes(alphabet[b % 64] for b in digest[:width]) + b"\r\n"
        counter += 1
    return bytes(out)


def expand(raw: bytes) -> bytes:
    """Replace the fill marker (if any) so that the message is exactly N bytes long."""
    match = _FILL_RE.search(raw)
    if match is None:
        return raw
    target = int(match.group(1))
    rest = len(raw) - len(match.group(0))
    if target < rest:
        raise ValueError(f"fill target {target} is smaller than the message without it")
    filler = _fill_lines(target - rest)
    return raw[: match.start()] + filler + raw[match.end() :]


@cache
def _expected() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(EXPECTED_FILE.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{EXPECTED_FILE} must map file names to expectations")
    return data


def load_corpus() -> list[CorpusCase]:
    """Every .eml file with its expectation, in file-name order (expanded, CRLF)."""
    expected = _expected()
    files = sorted(CORPUS_DIR.glob("*.eml"))
    names = {f.name for f in files}
    if names != set(expected):
        raise ValueError(
            f"expected.yaml and the .eml files differ: only files {sorted(names - set(expected))}"
            f", only expected {sorted(set(expected) - names)}"
        )
    return [CorpusCase(f.name, expand(to_crlf(f.read_bytes())), expected[f.name]) for f in files]


def corpus_case(name: str) -> CorpusCase:
    """One case by file name."""
    for case in load_corpus():
        if case.name == name:
            return case
    raise KeyError(name)
