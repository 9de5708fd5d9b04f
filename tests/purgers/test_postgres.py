"""The PostgreSQL purger and identity resolution, on a real SoundOps database per test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.datamap import DataMap, Resolution, load_datamap
from app.db import create_engine
from app.models import RequestKind
from app.pii import Pii
from app.purgers.base import PurgeFailed, PurgeRetriable, Subject
from app.purgers.postgres import PostgresPurger, transient_sqlstate
from app.services.resolution import Resolver
from testsupport.seed import World, make_world, owned_ids, seed_postgres, snapshot_postgres

DATAMAP: DataMap = load_datamap()


class Target:
    def __init__(self, dsn: str, engine: AsyncEngine, world: World) -> None:
        self.dsn, self.engine, self.world = dsn, engine, world

    async def subject(self, kind: RequestKind, **identities: str) -> Subject:
        resolution = await Resolver(self.engine, DATAMAP.postgres).resolve(kind, identities)
        return Subject(uuid.uuid4(), kind, {k: Pii(v) for k, v in identities.items()}, resolution)

    def purger(self, batch_size: int = 5_000) -> PostgresPurger:
        return PostgresPurger(self.engine, DATAMAP.postgres, batch_size=batch_size)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()


@pytest.fixture
async def target(fresh_pg_database: Any, soundops_template_database: str) -> AsyncIterator[Target]:
    database = fresh_pg_database(template=soundops_template_database, prefix="soundops")
    world = make_world()
    await seed_postgres(database.url, world)
    engine = create_engine(database.url)
    try:
        yield Target(database.url, engine, world)
    finally:
        await engine.dispose()


def _unrelated(snapshot: dict[str, list[str]], ids: list[str]) -> dict[str, list[str]]:
    return {t: [r for r in rows if not any(i in r for i in ids)] for t, rows in snapshot.items()}


async def test_account_deletion_removes_every_row_of_the_tenant_and_nothing_else(
    target: Target,
) -> None:
    alpha = target.world.tenants["alpha"]
    alpha_ids = await owned_ids(target.dsn, alpha.id)
    before = await snapshot_postgres(target.dsn)
    subject = await target.subject(RequestKind.account, site_name=alpha.site_name)
    assert subject.resolution.tenant_ids == [str(alpha.id)]
    assert sorted(subject.resolution.account_ids) == sorted(str(a.id) for a in alpha.accounts)

    preview = await target.purger().preview(subject)
    result = await target.purger().purge(subject)
    assert result.deleted == preview.deleted
    assert result.deleted["tenants"] == 1 and result.deleted["contacts"] == 3
    assert result.deleted["instagram_accounts"] == 2
    assert result.retained["billing_invoices"].count == 1
    assert "tax law" in result.retained["billing_invoices"].reason
    assert set(result.retained) == {"billing_invoices"}
    assert all(v == 0 for v in (await target.purger().verify(subject)).values())

    after = await snapshot_postgres(target.dsn)
    # Nothing of alpha is left, but its invoice, unlinked from the tenant.
    for table, rows in after.items():
        mentioning = [r for r in rows if any(i in r for i in alpha_ids)]
        assert mentioning == [], table
    invoices = await target.fetch(
        "SELECT tenant_id FROM billing_invoices WHERE invoice_number = $1", f"INV-{alpha.site_name}"
    )
    assert [r["tenant_id"] for r in invoices] == [None]
    # Everything that is not alpha's is byte-for-byte as before.
    unchanged = _unrelated(after, alpha_ids)
    unchanged["billing_invoices"] = [
        r for r in unchanged["billing_invoices"] if f"INV-{alpha.site_name}" not in r
    ]
    assert unchanged == _unrelated(before, alpha_ids)


async def test_meta_data_deletion_removes_one_accounts_instagram_data(target: Target) -> None:
    alpha = target.world.tenants["alpha"]
    fb, other = alpha.accounts
    before = await snapshot_postgres(target.dsn)
    subject = await target.subject(
        RequestKind.meta_data, facebook_user_id=fb.facebook_user_id or ""
    )
    assert subject.resolution.account_ids == [str(fb.id)]
    result = await target.purger().purge(subject)
    assert result.deleted["instagram_accounts"] == 1
    assert result.deleted["instagram_scheduled_posts"] == 3
    assert result.deleted["analytics_events"] == 3  # source = instagram only
    assert all(v == 0 for v in (await target.purger().verify(subject)).values())
    after = await snapshot_postgres(target.dsn)
    assert not any(str(fb.id) in row for rows in after.values() for row in rows)
    # The tenant, its other account and its non-Instagram data stay; the campaign event
    # that pointed at the account is kept, unlinked.
    assert after["tenants"] == before["tenants"]
    assert [r for r in after["instagram_accounts"] if str(other.id) in r] == [
        r for r in before["instagram_accounts"] if str(other.id) in r
    ]
    kept = await target.fetch(
        "SELECT count(*) AS n FROM analytics_events WHERE tenant_id = $1 AND source = 'campaign'"
        " AND instagram_account_id IS NULL AND name = 'ig'",
        alpha.id,
    )
    assert kept[0]["n"] == 1
    for table in ("contacts", "campaigns", "users", "site_pages", "billing_invoices"):
        assert after[table] == before[table]


@pytest.mark.parametrize(
    "identity",
    ["ig_user_id", "ig_username", "facebook_page_name"],
)
async def test_meta_data_identities_resolve_to_the_account(target: Target, identity: str) -> None:
    fb = target.world.tenants["alpha"].accounts[0]
    value = getattr(fb, identity)
    if identity != "ig_user_id":
        value = "  " + value.upper().replace(" ", "   ") + " "  # case and spaces do not matter
    subject = await target.subject(RequestKind.meta_data, **{identity: value})
    assert subject.resolution.account_ids == [str(fb.id)]
    assert subject.resolution.ig_user_ids == [fb.ig_user_id]


async def test_disconnect_clears_tokens_stops_posts_and_rules_but_keeps_history(
    target: Target,
) -> None:
    alpha = target.world.tenants["alpha"]
    account = alpha.accounts[1]
    before = await snapshot_postgres(target.dsn)
    subject = await target.subject(
        RequestKind.instagram_disconnect,
        tenant_id=str(alpha.id),
        instagram_account_id=str(account.id),
    )
    result = await target.purger().purge(subject)
    assert result.deleted == {
        "instagram_accounts (updated)": 2,
        "instagram_scheduled_posts (updated)": 2,
        "automation_rules (updated)": 1,
    }
    assert set(result.retained) == {
        "instagram_published_posts",
        "instagram_insights",
        "analytics_events",
    }
    row = (await target.fetch("SELECT * FROM instagram_accounts WHERE id = $1", account.id))[0]
    assert row["access_token_encrypted"] is None and row["page_token_encrypted"] is None
    assert row["status"] == "disconnected" and row["disconnected_at"] is not None
    posts = await target.fetch(
        "SELECT status FROM instagram_scheduled_posts WHERE instagram_account_id = $1", account.id
    )
    assert sorted(r["status"] for r in posts) == ["cancelled", "cancelled", "published"]
    rules = await target.fetch(
        "SELECT enabled FROM automation_rules WHERE instagram_account_id = $1", account.id
    )
    assert [r["enabled"] for r in rules] == [False]
    after = await snapshot_postgres(target.dsn)
    for table in ("instagram_published_posts", "instagram_insights", "analytics_events", "tenants"):
        assert after[table] == before[table]
    assert all(v == 0 for v in (await target.purger().verify(subject)).values())
    # Again: nothing more changes, disconnected_at included.
    again = await target.purger().purge(subject)
    assert set(again.deleted.values()) == {0}
    assert await snapshot_postgres(target.dsn) == after


async def test_rerun_is_a_no_op_that_verifies_clean(target: Target) -> None:
    subject = await target.subject(
        RequestKind.account, tenant_id=str(target.world.tenants["bravo"].id)
    )
    await target.purger().purge(subject)
    after = await snapshot_postgres(target.dsn)
    again = await target.purger().purge(subject)
    assert set(again.deleted.values()) == {0}
    assert await snapshot_postgres(target.dsn) == after
    assert set((await target.purger().verify(subject)).values()) == {0}


async def test_small_batches_delete_everything(target: Target) -> None:
    subject = await target.subject(
        RequestKind.account, owner_email=target.world.tenants["alpha"].owner_email.upper()
    )
    result = await target.purger(batch_size=2).purge(subject)
    assert result.deleted["contacts"] == 3 and result.deleted["analytics_events"] == 6 + 8
    assert set((await target.purger().verify(subject)).values()) == {0}


async def test_a_subject_that_matches_nothing_deletes_nothing(target: Target) -> None:
    before = await snapshot_postgres(target.dsn)
    subject = await target.subject(RequestKind.account, site_name="nobody-here")
    assert subject.resolution == Resolution()
    assert (await target.purger().purge(subject)).deleted == {}
    assert await target.purger().verify(subject) == {}
    assert await snapshot_postgres(target.dsn) == before


async def test_an_owner_email_of_several_accounts_is_refused(target: Target) -> None:
    alpha, bravo = target.world.tenants["alpha"], target.world.tenants["bravo"]
    conn = await asyncpg.connect(target.dsn)
    try:
        await conn.execute(
            "UPDATE tenants SET owner_email = $1 WHERE id = $2", alpha.owner_email, bravo.id
        )
    finally:
        await conn.close()
    with pytest.raises(PurgeFailed, match="matches 2 accounts") as info:
        await target.subject(RequestKind.account, owner_email=alpha.owner_email)
    assert alpha.owner_email not in str(info.value)


async def test_an_interrupted_purge_resumes_and_completes(target: Target, pg_server: Any) -> None:
    if not pg_server.local:
        pytest.skip("needs the local PostgreSQL server to stop it")
    alpha = target.world.tenants["alpha"]
    await target.fetch(
        "INSERT INTO contacts (id, tenant_id, email) SELECT gen_random_uuid(), $1, 'x@example.com'"
        " FROM generate_series(1, 3000)",
        alpha.id,
    )
    subject = await target.subject(RequestKind.account, tenant_id=str(alpha.id))
    slow = target.purger(batch_size=1)
    run = asyncio.create_task(slow.purge(subject))
    while True:  # stop the server once the purge is half-way through the contacts
        left = await target.fetch(
            "SELECT count(*) AS n FROM contacts WHERE tenant_id = $1", alpha.id
        )
        if left[0]["n"] < 2500 or run.done():
            break
        await asyncio.sleep(0.05)
    assert not run.done(), "the purge finished before the outage"
    await asyncio.to_thread(pg_server.stop, "immediate")
    try:
        with pytest.raises(PurgeRetriable, match="PostgreSQL"):
            await run
    finally:
        await asyncio.to_thread(pg_server.start)
    await target.engine.dispose()
    result = await target.purger().purge(subject)
    assert result.deleted["tenants"] == 1
    assert 0 < result.deleted["contacts"] < 3003  # part was deleted before the outage
    assert set((await target.purger().verify(subject)).values()) == {0}


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [
        ("57P03", True),  # cannot connect now: the server is shutting down or starting up
        ("57P01", True),  # admin shutdown
        ("08006", True),  # connection failure
        ("53300", True),  # too many connections
        ("40P01", True),  # deadlock detected
        ("40001", True),  # serialization failure
        ("42P01", False),  # undefined table: the data map is wrong, retrying will not help
        ("23503", False),  # foreign key violation
        (None, False),
    ],
)
def test_which_server_states_are_retried(sqlstate: str | None, transient: bool) -> None:
    assert transient_sqlstate(sqlstate) is transient
