"""Property tests of what parse_message takes from a message (Hypothesis, derandomized):
whatever the text, it never raises and every candidate is one clean line; and a name
written after a label ("... my Facebook Page: Foxtrot Live. Thanks!") is found whatever
the sentence around it, in the body as in the subject."""

from __future__ import annotations

import string
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.services.intake.email.candidates import MAX_CANDIDATE_CHARS, MAX_CANDIDATES
from app.services.intake.email.parse import parse_message

PROPERTY = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

HEAD = (
    "From: Kim <kim@paper-lanterns.example>\r\nTo: privacy@soundops.example\r\n"
    "Message-ID: <prop@x>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
)


def message(subject: str, body: str) -> bytes:
    return (HEAD + f"Subject: {subject}\r\n\r\n{body}\r\n").encode("utf-8", "surrogatepass")


def fold(value: str) -> str:
    return " ".join(value.split()).casefold()


def assert_clean(candidates: tuple[str, ...]) -> None:
    assert len(candidates) <= MAX_CANDIDATES
    assert len({c.casefold() for c in candidates}) == len(candidates)
    for candidate in candidates:
        assert candidate and candidate == candidate.strip()
        assert len(candidate) <= MAX_CANDIDATE_CHARS
        assert "\r" not in candidate and "\n" not in candidate
        assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in candidate)
        candidate.encode("utf-8")  # storable: no lone surrogate


# Text with line breaks of every kind, labels, quotes, punctuation and odd characters.
NOISY = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
        st.sampled_from(["\r\n", "\n", "\r", "\u2028", "\x85", ":", "=", ". ", "\u201c", "@"]),
        st.sampled_from(["Page: ", "site name = ", "Instagram username:", "http://", "> "]),
    ),
    max_size=40,
).map("".join)


@PROPERTY
@given(subject=NOISY, body=NOISY)
def test_any_text_parses_and_every_candidate_is_one_clean_line(subject: str, body: str) -> None:
    kinds = ("Account Deletion Request", "Meta Data Deletion Request")
    for line in (subject, f"{kinds[len(body) % 2]}: {subject}"):
        parsed = parse_message(
            message(line.replace("\r", " ").replace("\n", " "), body), authserv_id=None
        )
        assert_clean(parsed.candidates)


@PROPERTY
@given(raw=st.binary(max_size=600))
def test_any_bytes_parse(raw: bytes) -> None:
    assert_clean(parse_message(raw, authserv_id=None).candidates)
    assert_clean(
        parse_message(
            b"Subject: Account Deletion Request\r\n\r\n" + raw, authserv_id=None
        ).candidates
    )


# ASCII letters and digits, some accented letters, some Cyrillic (\u041a\u043e\u043c\u0430).
LETTERS = string.ascii_letters + string.digits + "äöüßéèçñø\u041a\u043e\u043c\u0430"
WORD = st.lists(st.text(alphabet=LETTERS, min_size=1, max_size=8), min_size=1, max_size=3).flatmap(
    lambda runs: st.sampled_from(["-", ".", "_", ""]).map(lambda joint: joint.join(runs))
)
NAME = st.lists(WORD, min_size=1, max_size=4).map(" ".join)
LABELS = st.sampled_from(
    [
        "Page",
        "Facebook Page",
        "page name",
        "Instagram username",
        "username",
        "site name",
        "Site",
        "Seite",
        "Benutzername",
    ]
)
SEPARATORS = st.sampled_from([": ", ":", " : ", "=", " = ", ":  "])
BEFORE = st.sampled_from(
    [
        "",
        "Please delete the data about my ",
        "Hello, could you remove everything you have about our ",
        "Bitte löscht alle Daten zu meiner ",
        "I am writing because of my ",
    ]
)
QUOTES = st.sampled_from(["{}", '"{}"', "\u201c{}\u201d", "\u00ab{}\u00bb", "'{}'"])
AFTER = st.sampled_from(
    [
        "",
        ".",
        "!",
        ". Thank you!",
        ", thanks.",
        " - cheers",
        " \u2013 it is our band page.",
        " (the official one).",
        "; we close it down.",
        ". Thanks a lot, Kim",
        "? Please confirm.",
    ]
)


@PROPERTY
@given(
    name=NAME,
    label=LABELS,
    separator=SEPARATORS,
    before=BEFORE,
    quotes=QUOTES,
    after=AFTER,
    in_subject=st.booleans(),
)
def test_a_labelled_name_is_found_whatever_the_sentence_around_it(
    name: str,
    label: str,
    separator: str,
    before: str,
    quotes: str,
    after: str,
    in_subject: bool,
) -> None:
    sentence = f"{before}{label}{separator}{quotes.format(name)}{after}"
    if in_subject:
        raw = message(f"Meta Data Deletion Request - {sentence}", "Hi,\r\n\r\nsee the subject.")
    else:
        raw = message("Meta Data Deletion Request", f"Hi,\r\n\r\n{sentence}\r\n\r\nKim")
    candidates = parse_message(raw, authserv_id=None).candidates
    assert_clean(candidates)
    assert fold(name) in {fold(c) for c in candidates}, (sentence, candidates)
