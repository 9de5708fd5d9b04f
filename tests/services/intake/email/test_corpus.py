"""The corpus agrees with its world: expected.yaml is well-formed, every expected outcome
follows from the parse and the handling rules of issue #10 applied to EMAIL_WORLD, and
seed_email_world puts exactly that world into a SoundOps database.

`reference_outcome` is the rule book written as plainly as possible (no database): it
checks the corpus, not the service. The handler's own tests run the corpus for real.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from app.services.intake.email.parse import MailKind, ParsedMail, parse_message
from tests.services.intake.email.corpus import (
    OPTIONAL_KEYS,
    OUTCOMES,
    REQUIRED_KEYS,
    REVIEW_REASONS,
    TRUSTED_AUTHSERV_ID,
    CorpusCase,
    load_corpus,
)
from tests.services.intake.email.world import EMAIL_WORLD, EmailWorld, seed_email_world, token_of
from testsupport.harness.services import FreshPgDatabase
from testsupport.seed import FERNET

CORPUS = load_corpus()
Outcome = tuple[str, str | None, bool]  # outcome, review_reason, reply


def reference_outcome(parsed: ParsedMail, world: EmailWorld, seen: set[str]) -> Outcome:
    """The handling rules of the issue, applied to every candidate of the parse."""
    if parsed.oversize:
        return "too_large", None, False
    if parsed.message_id in seen:
        return "duplicate", None, False
    if parsed.kind is None:
        return "ignored", None, not parsed.automatic and not parsed.dmarc_fail
    if parsed.dmarc_fail:
        return "needs_review", "dmarc_fail", False
    sender = parsed.sender
    if parsed.kind is MailKind.account:
        named = {t.key for c in parsed.candidates if (t := world.by_site(c)) is not None}
        if not named:
            if sender and len(world.owned_by(sender)) == 1:
                return "awaiting_confirmation", None, False
            return "needs_review", "no_match", False
    else:
        named = {t.key for c in parsed.candidates for t in world.instagram_tenants(c)}
        if not named:
            return "needs_review", "no_match", False
    # A sender who is the owner on file of exactly one matching tenant: pinned to it.
    owned = {key for key in named if sender == world.tenant(key).owner_email.lower()}
    if len(owned) == 1:
        return "awaiting_confirmation", None, False
    if len(named) > 1:
        return "needs_review", "several_tenants", False
    return "needs_review", "sender_not_on_file", False


def test_expected_entries_are_well_formed() -> None:
    names = [case.name for case in CORPUS]
    for case in CORPUS:
        keys = set(case.expected)
        assert REQUIRED_KEYS <= keys <= REQUIRED_KEYS | OPTIONAL_KEYS, case.name
        expected = case.expected
        assert expected["outcome"] in OUTCOMES
        assert expected["kind"] in (None, *[k.value for k in MailKind])
        if expected["outcome"] == "needs_review":
            assert expected["review_reason"] in REVIEW_REASONS, case.name
        else:
            assert expected["review_reason"] is None, case.name
        assert expected["reply"] is (
            expected["outcome"] == "ignored"
            and not expected["automatic"]
            and not expected["dmarc_fail"]
        ), case.name
        if "after" in expected:
            assert names.index(expected["after"]) < names.index(case.name)


def test_the_corpus_covers_the_shapes_of_the_issue() -> None:
    by_name = {case.name: case for case in CORPUS}
    raw = b"\n".join(case.raw for case in CORPUS if case.expected["outcome"] != "too_large")
    for needle in (
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Transfer-Encoding: base64",
        b"multipart/alternative",
        b"Content-Type: text/html",
        b"message/rfc822",
        b"application/zip",
        b"application/gzip",
        b"x-unknown-8bit",
        b"Reply-To:",
        b"Auto-Submitted: auto-replied",
        b"Precedence: bulk",
        b"Return-Path: <>",
        b"=0D=0A",
        b"dmarc=fail",
    ):
        assert needle in raw, needle
    assert any(not c.expected["message_id_present"] for c in CORPUS)
    assert any("Официальная" in str(c.expected["candidate"]) for c in CORPUS)
    assert len(by_name["17-oversize-2mib.eml"].raw) == 2 * 1_048_576


@pytest.mark.parametrize("case", CORPUS, ids=str)
def test_expected_outcome_follows_from_the_rules(case: CorpusCase) -> None:
    seen: set[str] = set()
    for earlier in CORPUS[: CORPUS.index(case)]:
        if earlier.name == case.expected.get("after"):
            seen.add(parse_message(earlier.raw, authserv_id=TRUSTED_AUTHSERV_ID).message_id)
    parsed = parse_message(case.raw, authserv_id=TRUSTED_AUTHSERV_ID)
    expected = case.expected
    assert reference_outcome(parsed, EMAIL_WORLD, seen) == (
        expected["outcome"],
        expected["review_reason"],
        expected["reply"],
    )


@pytest.mark.parametrize(
    "case",
    [c for c in CORPUS if c.expected["candidate"] is not None],
    ids=str,
)
def test_the_expected_candidate_names_what_the_outcome_says(case: CorpusCase) -> None:
    expected: dict[str, Any] = case.expected
    name = expected["candidate"]
    if expected["kind"] == "account":
        tenant = EMAIL_WORLD.by_site(name)
        tenants = [tenant] if tenant else []
    else:
        tenants = EMAIL_WORLD.instagram_tenants(name)
    reason = expected["review_reason"]
    if reason == "no_match":
        assert tenants == []
    elif reason == "several_tenants":
        assert len(tenants) > 1
    elif expected["outcome"] in ("awaiting_confirmation", "needs_review", "duplicate"):
        owned = [t for t in tenants if t.owner_email == expected["sender"]]
        if reason == "sender_not_on_file":
            assert len(tenants) == 1 and owned == []
        elif reason is None:  # pinned to the one matching tenant the sender owns
            assert len(owned) == 1


async def test_seed_email_world_inserts_the_world(
    fresh_pg_database: FreshPgDatabase, soundops_template_database: str
) -> None:
    db = fresh_pg_database(soundops_template_database, prefix="email_world")
    world = await seed_email_world(db.url)
    assert world is EMAIL_WORLD

    conn = await asyncpg.connect(db.url)
    try:
        tenants = {
            r["site_name"]: (r["id"], r["owner_email"])
            for r in await conn.fetch("SELECT id, site_name, owner_email FROM tenants")
        }
        accounts = await conn.fetch(
            "SELECT a.id, t.site_name, a.ig_user_id, a.ig_username, a.facebook_page_name,"
            " a.access_token_encrypted, a.status FROM instagram_accounts a"
            " JOIN tenants t ON t.id = a.tenant_id"
        )
    finally:
        await conn.close()

    assert tenants == {t.site_name: (t.id, t.owner_email) for t in world.tenants.values()}
    expected_accounts = {
        (a.id, t.site_name, a.ig_user_id, a.ig_username, a.facebook_page_name)
        for t in world.tenants.values()
        for a in t.accounts
    }
    assert {tuple(r.values())[:5] for r in accounts} == expected_accounts
    assert {r["status"] for r in accounts} == {"connected"}
    pages = {r["facebook_page_name"] for r in accounts}
    assert "Lunar Échoes — Официальная" in pages  # non-ASCII survives the round trip

    by_id = {a.id: a for t in world.tenants.values() for a in t.accounts}
    for row in accounts:
        token = FERNET.decrypt(bytes(row["access_token_encrypted"])).decode()
        assert token == token_of(by_id[row["id"]])

    shared = world.instagram_tenants("@Shared.Stage")
    assert sorted(t.site_name for t in shared) == ["copper-owls", "velvet-tides"]
