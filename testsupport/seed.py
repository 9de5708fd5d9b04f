"""A seeded SoundOps world, per ../shared/soundops/: three tenants across all stores.

- tenant A ("alpha"): two Instagram accounts (one Facebook Login with a Page, one
  Instagram Login), data in every table, Mongo messages/comments, S3 uploads with
  several versions and delete markers, cached Instagram media, invoices;
- tenant B ("bravo"): one Instagram account, a little of everything;
- tenant C ("charlie"): no Instagram at all, shares nothing;
- with ``shared_instagram=True``, tenant D ("delta"): another person's connection
  (Facebook Login, same Page) of alpha's first Instagram account: the same
  ``ig_user_id``, a different ``facebook_user_id`` and tokens. Its cached media
  lies under the same ``instagram/{ig_user_id}/`` prefix.
Snapshots of everything let tests prove that nothing else changed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from cryptography.fernet import Fernet

FERNET_KEY = Fernet.generate_key()
FERNET = Fernet(FERNET_KEY)

TABLES = [
    "tenants",
    "users",
    "site_settings",
    "site_pages",
    "media_files",
    "contacts",
    "audiences",
    "audience_members",
    "campaigns",
    "campaign_sends",
    "instagram_accounts",
    "instagram_scheduled_posts",
    "instagram_published_posts",
    "automation_rules",
    "instagram_insights",
    "analytics_events",
    "billing_invoices",
]


@dataclass
class Account:
    id: uuid.UUID
    tenant_id: uuid.UUID
    family: str
    ig_user_id: str
    ig_username: str
    facebook_user_id: str | None
    facebook_page_id: str | None
    facebook_page_name: str | None
    user_token: str
    page_token: str | None


@dataclass
class Tenant:
    id: uuid.UUID
    site_name: str
    owner_email: str
    accounts: list[Account] = field(default_factory=list)


@dataclass
class World:
    tenants: dict[str, Tenant]

    def identifiers(self) -> list[str]:
        """Every identifier and token a leak test must not find."""
        values: list[str] = []
        for t in self.tenants.values():
            values += [str(t.id), t.site_name, t.owner_email]
            for a in t.accounts:
                values += [str(a.id), a.ig_user_id, a.ig_username, a.user_token]
                values += [
                    v
                    for v in (
                        a.facebook_user_id,
                        a.facebook_page_id,
                        a.facebook_page_name,
                        a.page_token,
                    )
                    if v
                ]
        return values


_counter = iter(range(10**6))


def _n() -> int:
    return next(_counter)


def make_world(tag: str = "", *, shared_instagram: bool = False) -> World:
    tag = tag or uuid.uuid4().hex[:6]
    alpha = Tenant(uuid.uuid4(), f"alpha-{tag}", f"owner.alpha.{tag}@example.com")
    bravo = Tenant(uuid.uuid4(), f"bravo-{tag}", f"owner.bravo.{tag}@example.com")
    charlie = Tenant(uuid.uuid4(), f"charlie-{tag}", f"owner.charlie.{tag}@example.com")
    base = 17841400000000000 + _n() * 100
    alpha.accounts = [
        Account(
            uuid.uuid4(),
            alpha.id,
            "facebook",
            str(base + 1),
            f"alpha.music.{tag}",
            str(base + 11),
            str(base + 21),
            f"Alpha Music Café {tag}",
            f"EAAG-user-alpha-{tag}",
            f"EAAG-page-alpha-{tag}",
        ),
        Account(
            uuid.uuid4(),
            alpha.id,
            "instagram",
            str(base + 2),
            f"alpha.tour.{tag}",
            None,
            None,
            None,
            f"IGQV-user-alpha-{tag}",
            None,
        ),
    ]
    bravo.accounts = [
        Account(
            uuid.uuid4(),
            bravo.id,
            "facebook",
            str(base + 3),
            f"bravo.band.{tag}",
            str(base + 13),
            str(base + 23),
            f"Bravo Band {tag}",
            f"EAAG-user-bravo-{tag}",
            f"EAAG-page-bravo-{tag}",
        ),
    ]
    world = World({"alpha": alpha, "bravo": bravo, "charlie": charlie})
    if shared_instagram:
        shared = alpha.accounts[0]
        delta = Tenant(uuid.uuid4(), f"delta-{tag}", f"owner.delta.{tag}@example.com")
        delta.accounts = [
            Account(
                uuid.uuid4(),
                delta.id,
                "facebook",
                shared.ig_user_id,
                shared.ig_username,
                str(base + 14),
                shared.facebook_page_id,
                shared.facebook_page_name,
                f"EAAG-user-delta-{tag}",
                f"EAAG-page-delta-{tag}",
            )
        ]
        world.tenants["delta"] = delta
    return world


async def seed_postgres(dsn: str, world: World, scale: int = 3) -> None:
    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    try:
        async with conn.transaction():
            for t in world.tenants.values():
                await conn.execute(
                    "INSERT INTO tenants (id, site_name, owner_email, plan) VALUES ($1,$2,$3,'pro')",
                    t.id,
                    t.site_name,
                    t.owner_email,
                )
                for i in range(2):
                    await conn.execute(
                        "INSERT INTO users (id, tenant_id, email, display_name) VALUES ($1,$2,$3,$4)",
                        uuid.uuid4(),
                        t.id,
                        f"user{i}.{t.owner_email}",
                        f"User {i}",
                    )
                await conn.execute(
                    "INSERT INTO site_settings (tenant_id, domain, theme) VALUES ($1,$2,$3)",
                    t.id,
                    f"{t.site_name}.example",
                    json.dumps({"color": "blue"}),
                )
                await conn.execute(
                    "INSERT INTO site_pages (id, tenant_id, slug, title, body) VALUES ($1,$2,'home','Home','hi')",
                    uuid.uuid4(),
                    t.id,
                )
                await conn.execute(
                    "INSERT INTO media_files (id, tenant_id, s3_bucket, s3_key, content_type, size_bytes)"
                    " VALUES ($1,$2,'soundops-media',$3,'audio/mpeg',1000)",
                    uuid.uuid4(),
                    t.id,
                    f"tenants/{t.id}/uploads/song.mp3",
                )
                contacts = [uuid.uuid4() for _ in range(scale)]
                await conn.executemany(
                    "INSERT INTO contacts (id, tenant_id, email, name, phone) VALUES ($1,$2,$3,'Fan','+100')",
                    [
                        (c, t.id, f"fan{i}.{t.site_name}@example.com")
                        for i, c in enumerate(contacts)
                    ],
                )
                audience = uuid.uuid4()
                await conn.execute(
                    "INSERT INTO audiences (id, tenant_id, name) VALUES ($1,$2,'All fans')",
                    audience,
                    t.id,
                )
                await conn.executemany(
                    "INSERT INTO audience_members (audience_id, contact_id) VALUES ($1,$2)",
                    [(audience, c) for c in contacts],
                )
                campaign = uuid.uuid4()
                await conn.execute(
                    "INSERT INTO campaigns (id, tenant_id, name, subject, body) VALUES ($1,$2,'Tour','New tour','...')",
                    campaign,
                    t.id,
                )
                await conn.executemany(
                    "INSERT INTO campaign_sends (id, campaign_id, contact_id, sent_at) VALUES ($1,$2,$3,$4)",
                    [(uuid.uuid4(), campaign, c, now) for c in contacts],
                )
                await conn.executemany(
                    "INSERT INTO analytics_events (tenant_id, source, name, occurred_at) VALUES ($1,$2,'view',$3)",
                    [(t.id, source, now) for source in ("site", "campaign") for _ in range(scale)],
                )
                await conn.execute(
                    "INSERT INTO billing_invoices (id, tenant_id, invoice_number, amount_cents, issued_at,"
                    " customer_name, customer_email) VALUES ($1,$2,$3,1900,$4,'Customer',$5)",
                    uuid.uuid4(),
                    t.id,
                    f"INV-{t.site_name}",
                    now,
                    t.owner_email,
                )
                for a in t.accounts:
                    await conn.execute(
                        "INSERT INTO instagram_accounts (id, tenant_id, login_family, ig_user_id, ig_username,"
                        " facebook_user_id, facebook_page_id, facebook_page_name, access_token_encrypted,"
                        " page_token_encrypted, connected_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                        a.id,
                        t.id,
                        a.family,
                        a.ig_user_id,
                        a.ig_username,
                        a.facebook_user_id,
                        a.facebook_page_id,
                        a.facebook_page_name,
                        FERNET.encrypt(a.user_token.encode()),
                        FERNET.encrypt(a.page_token.encode()) if a.page_token else None,
                        now - timedelta(days=10),
                    )
                    for status in ("scheduled", "published", "scheduled"):
                        await conn.execute(
                            "INSERT INTO instagram_scheduled_posts (id, instagram_account_id, caption,"
                            " publish_at, status) VALUES ($1,$2,'caption',$3,$4)",
                            uuid.uuid4(),
                            a.id,
                            now + timedelta(days=1),
                            status,
                        )
                    await conn.execute(
                        "INSERT INTO instagram_published_posts (id, instagram_account_id, ig_media_id,"
                        " permalink, published_at) VALUES ($1,$2,$3,'https://instagram.example/p/1',$4)",
                        uuid.uuid4(),
                        a.id,
                        str(_n()),
                        now,
                    )
                    await conn.execute(
                        "INSERT INTO automation_rules (id, instagram_account_id, name, trigger, action, enabled)"
                        " VALUES ($1,$2,'reply',$3,$4,true)",
                        uuid.uuid4(),
                        a.id,
                        json.dumps({"on": "comment"}),
                        json.dumps({"do": "reply"}),
                    )
                    await conn.executemany(
                        "INSERT INTO instagram_insights (instagram_account_id, metric, value, day)"
                        " VALUES ($1,'reach',$2,$3)",
                        [
                            (a.id, float(i), date(2026, 11, 1) + timedelta(days=i))
                            for i in range(scale)
                        ],
                    )
                    await conn.executemany(
                        "INSERT INTO analytics_events (tenant_id, source, instagram_account_id, name,"
                        " occurred_at) VALUES ($1,$2,$3,'ig',$4)",
                        [(t.id, "instagram", a.id, now) for _ in range(scale)]
                        + [(t.id, "campaign", a.id, now)],
                    )
    finally:
        await conn.close()


async def snapshot_postgres(dsn: str) -> dict[str, list[str]]:
    """Every row of every table, as sorted JSON text: equality means byte-for-byte unchanged."""
    conn = await asyncpg.connect(dsn)
    try:
        snap = {}
        for table in TABLES:
            rows = await conn.fetch(f"SELECT to_jsonb(t)::text AS j FROM {table} t")
            snap[table] = sorted(r["j"] for r in rows)
        return snap
    finally:
        await conn.close()


def mentioning(snapshot: dict[str, Any], needles: list[str]) -> dict[str, Any]:
    """Of snapshots per store (``{store: {table: rows}}``), the rows, documents and object
    versions that name one of the needles; only tables with some, only stores with some."""
    found: dict[str, Any] = {}
    for store, tables in snapshot.items():
        hits = {
            name: [row for row in rows if any(n in str(row) for n in needles)]
            for name, rows in tables.items()
        }
        hits = {name: rows for name, rows in hits.items() if rows}
        if hits:
            found[store] = hits
    return found


def without(snapshot: dict[str, Any], needles: list[str]) -> dict[str, Any]:
    """Of snapshots per store, every row, document and object version that names no needle."""
    return {
        store: {
            name: [row for row in rows if not any(n in str(row) for n in needles)]
            for name, rows in tables.items()
        }
        for store, tables in snapshot.items()
    }


def rows_mentioning(snapshot: dict[str, list[str]], *values: str) -> dict[str, int]:
    hits: dict[str, int] = {}
    for table, rows in snapshot.items():
        count = sum(1 for row in rows if any(v in row for v in values))
        if count:
            hits[table] = count
    return hits


def mongo_documents(world: World, per_account: int = 3) -> dict[str, list[dict[str, Any]]]:
    now = datetime.now(UTC).replace(microsecond=0)
    docs: dict[str, list[dict[str, Any]]] = {"instagram_messages": [], "instagram_comments": []}
    for t in world.tenants.values():
        for a in t.accounts:
            for i in range(per_account):
                common = {
                    "tenant_id": str(t.id),
                    "instagram_account_id": str(a.id),
                    "ig_user_id": a.ig_user_id,
                    "created_at": now - timedelta(hours=i),
                }
                docs["instagram_messages"].append(
                    {**common, "thread_id": f"t{i}", "from_id": str(_n()), "text": f"hello {i}"}
                )
                docs["instagram_comments"].append(
                    {
                        **common,
                        "media_id": str(_n()),
                        "comment_id": str(_n()),
                        "from_username": f"fan{i}",
                        "text": f"nice {i}",
                    }
                )
    return docs


async def seed_mongo(db: Any, world: World) -> None:
    for name, docs in mongo_documents(world).items():
        if docs:
            await db[name].insert_many(docs)


async def snapshot_mongo(db: Any) -> dict[str, list[str]]:
    snap = {}
    for name in ("instagram_messages", "instagram_comments"):
        docs = await db[name].find({}).to_list(None)
        snap[name] = sorted(json.dumps(d, default=str, sort_keys=True) for d in docs)
    return snap


MEDIA, CACHE = "soundops-media", "soundops-ig-cache"


async def create_buckets(s3: Any) -> None:
    await s3.create_bucket(Bucket=MEDIA)
    await s3.put_bucket_versioning(Bucket=MEDIA, VersioningConfiguration={"Status": "Enabled"})
    await s3.create_bucket(Bucket=CACHE)


async def seed_s3(s3: Any, world: World) -> None:
    for t in world.tenants.values():
        for path in ("uploads/song.mp3", "uploads/cover.jpg", "site/logo.png"):
            key = f"tenants/{t.id}/{path}"
            await s3.put_object(Bucket=MEDIA, Key=key, Body=b"v1")
            await s3.put_object(Bucket=MEDIA, Key=key, Body=b"v2")
        gone = f"tenants/{t.id}/uploads/old.wav"
        await s3.put_object(Bucket=MEDIA, Key=gone, Body=b"old")
        await s3.delete_object(Bucket=MEDIA, Key=gone)  # leaves a delete marker
        for a in t.accounts:
            for i in range(3):
                await s3.put_object(
                    Bucket=CACHE, Key=f"instagram/{a.ig_user_id}/media/{i}.jpg", Body=b"img"
                )


async def snapshot_s3(s3: Any) -> dict[str, list[tuple[str, str, bool]]]:
    snap: dict[str, list[tuple[str, str, bool]]] = {}
    for bucket in (MEDIA, CACHE):
        entries: list[tuple[str, str, bool]] = []
        paginator = s3.get_paginator("list_object_versions")
        async for page in paginator.paginate(Bucket=bucket):
            for v in page.get("Versions", []):
                entries.append((v["Key"], v["VersionId"], False))
            for m in page.get("DeleteMarkers", []):
                entries.append((m["Key"], m["VersionId"], True))
        snap[bucket] = sorted(entries)
    return snap


async def owned_ids(dsn: str, tenant_id: uuid.UUID) -> list[str]:
    """Keys of every row that belongs to the tenant (rows of link tables name one of them)."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [str(tenant_id)]
        for table in ("instagram_accounts", "contacts", "audiences", "campaigns", "users"):
            rows = await conn.fetch(f"SELECT id FROM {table} WHERE tenant_id = $1", tenant_id)
            ids += [str(r["id"]) for r in rows]
        return ids
    finally:
        await conn.close()


async def add_tenant(dsn: str, site_name: str, owner_email: str) -> uuid.UUID:
    """One more tenant (no other rows) in the SoundOps database at ``dsn``."""
    tenant_id = uuid.uuid4()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO tenants (id, site_name, owner_email) VALUES ($1, $2, $3)",
            tenant_id,
            site_name,
            owner_email,
        )
    finally:
        await conn.close()
    return tenant_id


async def add_page(
    dsn: str, tenant_id: uuid.UUID, page_name: str, *, page_id: str | None = None
) -> uuid.UUID:
    """One more connected Instagram account of a tenant, linked to a Facebook Page."""
    account_id, n = uuid.uuid4(), uuid.uuid4().int % 10**9
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO instagram_accounts (id, tenant_id, login_family, ig_user_id,"
            " ig_username, facebook_user_id, facebook_page_id, facebook_page_name)"
            " VALUES ($1, $2, 'facebook', $3, $4, $5, $6, $7)",
            account_id,
            tenant_id,
            str(17841490000000000 + n),
            f"page.{n}",
            str(100000090000000 + n),
            page_id or str(104000090000000 + n),
            page_name,
        )
    finally:
        await conn.close()
    return account_id
