"""The one normalisation of names (app/names.py): properties (Hypothesis), and its SQL
pre-filter on a real PostgreSQL, which must let through every value that normalises to
the name asked for (the exact comparison is then made in Python)."""

from __future__ import annotations

import string
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.names import normalise, normalise_as, normalise_username, prefilter
from app.subjects import MetaDataSubject
from testsupport.harness.services import FreshPgDatabase

WORDS = st.lists(
    st.text(alphabet=string.ascii_letters + string.digits + "._-'&éüçñßÅ", min_size=1, max_size=8),
    min_size=1,
    max_size=4,
)
SPACES = st.lists(st.sampled_from([" ", "\t", "\n", "\u00a0", "\u3000", "\u2003"]), min_size=1)
# PostgreSQL text cannot hold NUL (or lone surrogates, which UTF-8 cannot encode).
STORABLE = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40
)


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _spaced(words: list[str], gaps: list[str]) -> str:
    out = gaps[0]
    for i, word in enumerate(words):
        out += word + gaps[(i + 1) % len(gaps)]
    return out


@given(st.text())
def test_normalising_never_fails_and_is_idempotent(text: str) -> None:
    for function in (normalise, normalise_username):
        once = function(text)
        assert function(once) == once
        assert once == once.strip() and "  " not in once


@given(WORDS, SPACES, st.booleans(), st.booleans())
def test_variants_of_spacing_case_width_and_at_are_the_same_name(
    words: list[str], gaps: list[str], upper: bool, wide: bool
) -> None:
    name = " ".join(words)
    variant = _spaced([w.upper() if upper else w.swapcase() for w in words], gaps)
    if wide:
        variant = _fullwidth(variant)
    assert normalise(variant) == normalise(name)
    assert normalise_username("@" + variant) == normalise_username(name)
    assert normalise_as("ig_username", " @" + variant) == normalise_as("ig_username", name)


@given(WORDS, WORDS)
def test_really_different_names_never_compare_equal(first: list[str], second: list[str]) -> None:
    a, b = " ".join(first), " ".join(second)
    assume(a.casefold() != b.casefold())
    assert normalise(a) != normalise(b)


def test_known_pairs() -> None:
    assert normalise("  Große   STRASSE ") == normalise("grosse strasse") == "grosse strasse"
    assert normalise(_fullwidth("Acme") + "\u00a0Records") == "acme records"
    assert normalise("Lunar Échoes") != normalise("Lunar Echoes")  # an accent is no case
    assert normalise_username("@@Shared.Stage") == "shared.stage"


@given(WORDS, st.booleans())
def test_subjects_are_stored_in_the_normalised_form(words: list[str], wide: bool) -> None:
    name = " ".join(words)
    written = _fullwidth(name.upper()) if wide else f"  {name.upper()}  "
    subject = MetaDataSubject(facebook_page_name=written)
    assert subject.identities() == {"facebook_page_name": normalise(name)}


# --- the SQL pre-filter, on PostgreSQL -------------------------------------------------


@pytest.fixture
async def pg(fresh_pg_database: FreshPgDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(fresh_pg_database(prefix="names").async_url)
    yield engine
    await engine.dispose()


async def _passes(engine: AsyncEngine, identity: str, stored: str, wanted: str) -> bool:
    column = sa.literal(stored, sa.Text)
    async with engine.connect() as conn:
        return bool((await conn.execute(sa.select(prefilter(identity, column, {wanted})))).scalar())


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(STORABLE, st.sampled_from(["facebook_page_name", "ig_username"]))
async def test_the_sql_prefilter_lets_through_everything_that_matches(
    pg: AsyncEngine, stored: str, identity: str
) -> None:
    """Whatever the stored text, the pre-filter passes it for its own normalised name."""
    assert await _passes(pg, identity, stored, normalise_as(identity, stored))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(WORDS, WORDS)
async def test_the_sql_prefilter_is_exact_for_ascii(
    pg: AsyncEngine, first: list[str], second: list[str]
) -> None:
    a = " ".join(w.encode("ascii", "ignore").decode() or "x" for w in first)
    b = "\t".join(w.encode("ascii", "ignore").decode() or "y" for w in second)
    expected = normalise(a) == normalise(b)
    assert await _passes(pg, "facebook_page_name", a, normalise(b)) is expected


async def test_the_sql_prefilter_on_known_pairs(pg: AsyncEngine) -> None:
    assert await _passes(pg, "facebook_page_name", " Acme \x1f Records ", "acme records")
    assert await _passes(pg, "ig_username", " @@Acme.Records", "acme.records")
    assert not await _passes(pg, "facebook_page_name", "Acme Recordz", "acme records")
    # Non-ASCII text always passes: Python decides ("STRASSE" is "straße" case-folded).
    assert await _passes(pg, "facebook_page_name", "Straße", "strasse")
