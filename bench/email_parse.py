"""E-mail parsing of hostile 1 MiB messages, beside the stdlib parser in the same run.

    .venv/bin/python -m bench.email_parse

The tests check what ``parse_message`` finds in these messages; how long it takes is
measured here (never asserted in a test). The baseline is what every parse pays anyway:
``email.message_from_bytes`` with the modern policy over the same bytes. Each figure is the
best of five runs, so that a busy machine moves it little; the ratio is the one to watch.
"""

from __future__ import annotations

import base64
import email
import random
import time
from collections.abc import Callable
from email import policy
from functools import partial

from app.services.intake.email.parse import parse_message
from testsupport.mail import many_parts

MIB = 1_048_576

HOSTILE_BODIES: dict[str, tuple[str, str]] = {
    "unclosed": ("text/html", "<span>" * 150_000),
    "unopened": ("text/html", "<div>" + "</b>" * 200_000),
    "nested-quotes": ("text/html", "<blockquote>" * 40_000 + "x" + "</blockquote>" * 40_000),
    "unclosed-styles": ("text/html", "<style>" * 140_000),
    "many-heads": ("text/html", "<head><style>p{}</style>" * 40_000 + "<p>Site: lunar-echoes</p>"),
    "one-long-line": ("text/plain", "lunar-echoes " * 70_000),
    "blank-lines": ("text/plain", "\n" * 500_000 + "Site: lunar-echoes\n"),
    "at-signs": ("text/plain", "a@b " * 200_000),
    "short-lines": ("text/plain", "x\n" * 340_000),
    "plain-text": ("text/plain", "Site: lunar-echoes and more words here\n" * 25_000),
    "html": ("text/html", "<div><p>Site: <b>lunar-echoes</b></p></div>\n" * 21_000),
}


def _message(content_type: str, body: str) -> bytes:
    head = f"From: a@b.example\nSubject: Account Deletion Request\nContent-Type: {content_type}\n\n"
    return (head + body).replace("\n", "\r\n").encode()[:MIB]


def _attachment() -> bytes:
    blob = base64.encodebytes(random.Random(1).randbytes(740_000)).decode()
    raw = (
        "From: a@b.example\nSubject: Account Deletion Request\n"
        "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
        "Site: lunar-echoes\n--b\nContent-Type: application/zip\n"
        f"Content-Transfer-Encoding: base64\n\n{blob}--b--\n"
    )
    return raw.replace("\n", "\r\n").encode()


def _best(fn: Callable[[], object], runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run() -> list[dict[str, object]]:
    messages = {name: _message(*spec) for name, spec in HOSTILE_BODIES.items()}
    messages["attachment"] = _attachment()
    messages["parts-nested"] = many_parts("nested")
    messages["parts-side-by-side"] = many_parts("side-by-side")
    rows: list[dict[str, object]] = []
    for name, raw in messages.items():
        service = _best(partial(parse_message, raw, authserv_id=None))
        try:
            floor: float | None = _best(
                partial(email.message_from_bytes, raw, policy=policy.default)
            )
        except RecursionError:  # the stdlib parser cannot take 20,000 levels at all
            floor = None
        rows.append(
            {
                "message": name,
                "bytes": len(raw),
                "service_ms": round(service * 1000, 1),
                "stdlib_ms": round(floor * 1000, 1) if floor else "fails",
                "ratio": round(service / floor, 2) if floor else "-",
            }
        )
    return rows


def main() -> None:
    rows = run()
    print(f"{'message':<16} {'bytes':>9} {'parse ms':>9} {'stdlib ms':>10} {'ratio':>6}")
    for row in rows:
        print(
            f"{row['message']:<16} {row['bytes']:>9} {row['service_ms']:>9} "
            f"{row['stdlib_ms']:>10} {row['ratio']:>6}"
        )


if __name__ == "__main__":
    main()
