"""The one normalisation of names that people type: Page names, usernames, site names and
addresses are compared after it everywhere (subject validation, e-mail intake, run-time
resolution), so that intake and the deletion never disagree about whom a name means.

``normalise``: Unicode NFKC, case-folded (``str.casefold``: "Straße" equals "STRASSE"),
surrounding whitespace removed and inner runs of whitespace folded to one space.
``normalise_username`` also drops a leading ``@``.

PostgreSQL cannot compute this (``lower()`` is not ``casefold()``, and ``normalize()``
depends on the server's version of Unicode), so the database only pre-filters:
``prefilter`` selects a superset of the rows that can match (exact for ASCII text,
every non-ASCII value passes), and the caller keeps the rows whose value ``normalise``
maps to a wanted name.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

# Identities compared as usernames (a leading @ is not part of the name).
USERNAME_IDENTITIES = frozenset({"ig_username"})

# What str.split() treats as whitespace among ASCII characters; PostgreSQL's \s lacks
# the four separators \x1c-\x1f, so the class is spelled out.
_ASCII_SPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace trimmed and folded. Idempotent."""
    # Case folding can leave text that NFKC changes again (and the reverse); one round is
    # stable for every single character, and repeating until nothing changes makes the
    # function idempotent for any sequence too.
    value = text
    for _ in range(4):
        folded = " ".join(
            unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold()).split()
        )
        if folded == value:
            break
        value = folded
    return value


def normalise_username(text: str) -> str:
    """``normalise``, and a leading ``@`` dropped (with any spaces or further ``@`` after it)."""
    return normalise(normalise(text).lstrip("@ "))


def normalise_as(identity: str, value: str) -> str:
    """The normalised form of ``value`` as an ``identity`` of the data map."""
    return normalise_username(value) if identity in USERNAME_IDENTITIES else normalise(value)


def prefilter(
    identity: str, column: sa.ColumnElement[Any], wanted: Collection[str]
) -> sa.ColumnElement[bool]:
    """Rows whose ``column`` may be, as ``identity``, one of ``wanted`` (normalised).

    For text of ASCII characters only, ``normalise_as`` is lower-casing, whitespace
    folding (and dropping leading ``@`` of usernames), which SQL computes exactly; other
    text always passes. The caller keeps the rows whose value ``normalise_as`` maps into
    ``wanted``.
    """
    ascii_wanted = sorted({w for w in wanted if w.isascii()})
    folded: sa.ColumnElement[Any] = sa.func.btrim(
        sa.func.regexp_replace(
            sa.func.translate(column, _UPPER, _UPPER.lower()),
            f"[{_ASCII_SPACE}]+",
            " ",
            "g",
        )
    )
    if identity in USERNAME_IDENTITIES:
        folded = sa.func.btrim(sa.func.ltrim(folded, "@ "))
    non_ascii = column.regexp_match("[^\x01-\x7f]")
    if not ascii_wanted:
        return non_ascii
    return sa.or_(folded.in_(ascii_wanted), non_ascii)
