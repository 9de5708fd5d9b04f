"""A large account deletion by the service against a floor script; disconnect latency; memory.

Everything runs on the real test servers (PostgreSQL 15, FerretDB on its PostgreSQL backend
in a cluster of its own, moto, the fake Graph API), the service as a real
``soundops-deletion serve`` process with its worker inside, tracking store on PostgreSQL. One run:

1. seeds ``--small-tenants`` small worlds (3 tenants each, Instagram accounts, messages,
   uploads, cached media) that must survive everything below;
2. **disconnect, idle**: ``--disconnects`` ``instagram_disconnect`` requests one after the
   other, each timed from ``POST`` to ``completed``;
3. **purge**: seeds the large tenant (``--rows`` PostgreSQL rows over contacts, audience
   members, campaign sends, analytics events, insights and media rows; ``--docs`` MongoDB
   messages and comments; ``--versions`` S3 object versions, 2 per key plus a delete marker
   on every tenth key; ``--cache`` cached-media objects) and times its account deletion from
   ``POST`` to ``completed`` (verification included); the process's peak RSS;
4. **floor**: re-seeds the same data and deletes it with a plain script on the same
   drivers: one set-based statement per table in FK order, per collection one
   ``delete_many`` (over ``_id`` ranges of 32,000: FerretDB refuses more than 32,766 matches
   on its SQLite backend, 65,535 on PostgreSQL; the service's batch cap is under both),
   ``delete_objects`` in 1,000-key batches; the three stores concurrently;
5. **under load**: a fresh service process, the large tenant at ``--load-fraction`` of the
   size, and while its deletion runs, the disconnects again; its peak RSS is the second size.

After 3 and 4 every small tenant's rows, documents and objects are compared with a
snapshot taken before: nothing else may be lost.

    .venv/bin/python -m bench.large_purge [--rows 200000 --docs 200000 --versions 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiobotocore.session import get_session
from pymongo import AsyncMongoClient

from app.db import upgrade
from bench import profile
from bench.common import (
    ServiceProcess,
    cpu_snapshot,
    cpu_used,
    previously,
    service_env,
    token,
)
from testsupport.fake_graph import FakeGraph
from testsupport.harness.services import start_ferretdb, start_moto, start_postgres
from testsupport.seed import (
    CACHE,
    FERNET,
    FERNET_KEY,
    MEDIA,
    World,
    create_buckets,
    make_world,
    seed_mongo,
    seed_postgres,
    seed_s3,
    snapshot_mongo,
    snapshot_postgres,
    snapshot_s3,
)

SCHEMA = "tests/data/soundops_schema.sql"
PROFILE_OUT = Path("bench/results/purge.pyspy.txt")
LOAD_PROFILE_OUT = Path("bench/results/purge-load.pyspy.txt")
MIB = 1.048576  # MB per MiB
RSS_FLAT = 1.1  # "flat": peak RSS at the full size at most this times the half size's
MONGO_DB = "soundops"
FLOOR_CHUNK = 32_000


@dataclass
class Large:
    tenant: uuid.UUID
    account: uuid.UUID
    ig_user_id: str
    rows: int = 0
    docs: int = 0
    versions: int = 0
    cache: int = 0
    seed_seconds: float = 0.0


@dataclass
class Stack:
    pg_dsn: str
    mongo: AsyncMongoClient[dict[str, Any]]
    s3: Any
    graph: FakeGraph
    worlds: list[World] = field(default_factory=list)

    @property
    def db(self) -> Any:
        return self.mongo[MONGO_DB]


# ------------------------------------------------------------------ seeding


async def seed_large_postgres(dsn: str, large: Large, rows: int, keys: int) -> int:
    """``rows`` rows for one tenant: ``keys`` media rows, the rest spread over five tables."""
    share = max(1, (rows - keys) // 5)
    t, a = large.tenant, large.account
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO tenants (id, site_name, owner_email, plan) VALUES ($1, $2, $3, 'pro')",
                t,
                f"large-{t.hex[:8]}",
                f"owner.{t.hex[:8]}@example.com",
            )
            await conn.execute(
                "INSERT INTO users (id, tenant_id, email, display_name)"
                " SELECT gen_random_uuid(), $1, 'user' || g || '.' || $2, 'User'"
                " FROM generate_series(1, 3) g",
                t,
                t.hex,
            )
            await conn.execute(
                "INSERT INTO site_settings (tenant_id, domain, theme) VALUES ($1, $2, '{}')",
                t,
                f"{t.hex}.example",
            )
            await conn.execute(
                "INSERT INTO site_pages (id, tenant_id, slug, title, body)"
                " SELECT gen_random_uuid(), $1, 'p' || g, 'Page', 'text'"
                " FROM generate_series(1, 20) g",
                t,
            )
            await conn.execute(
                "INSERT INTO media_files (id, tenant_id, s3_bucket, s3_key, content_type,"
                " size_bytes) SELECT gen_random_uuid(), $1, 'soundops-media',"
                " 'tenants/' || $3 || '/uploads/' || g || '.bin', 'audio/mpeg', 1"
                " FROM generate_series(1, $2) g",
                t,
                keys,
                str(t),
            )
            await conn.execute(
                "INSERT INTO contacts (id, tenant_id, email, name, phone)"
                " SELECT gen_random_uuid(), $1, 'fan' || g || '@example.com', 'Fan', '+1'"
                " FROM generate_series(1, $2) g",
                t,
                share,
            )
            audience, campaign = uuid.uuid4(), uuid.uuid4()
            await conn.execute(
                "INSERT INTO audiences (id, tenant_id, name) VALUES ($1, $2, 'all')", audience, t
            )
            await conn.execute(
                "INSERT INTO campaigns (id, tenant_id, name, subject, body)"
                " VALUES ($1, $2, 'c', 's', 'b')",
                campaign,
                t,
            )
            await conn.execute(
                "INSERT INTO audience_members (audience_id, contact_id)"
                " SELECT $1, id FROM contacts WHERE tenant_id = $2",
                audience,
                t,
            )
            await conn.execute(
                "INSERT INTO campaign_sends (id, campaign_id, contact_id, sent_at)"
                " SELECT gen_random_uuid(), $1, id, now() FROM contacts WHERE tenant_id = $2",
                campaign,
                t,
            )
            await conn.execute(
                "INSERT INTO instagram_accounts (id, tenant_id, login_family, ig_user_id,"
                " ig_username, access_token_encrypted, connected_at)"
                " VALUES ($1, $2, 'instagram', $3, $4, $5, now() - interval '10 days')",
                a,
                t,
                large.ig_user_id,
                f"large.{t.hex[:8]}",
                FERNET.encrypt(f"IGQV-large-{t.hex}".encode()),
            )
            await conn.execute(
                "INSERT INTO instagram_scheduled_posts (id, instagram_account_id, caption,"
                " publish_at, status) SELECT gen_random_uuid(), $1, 'c', now(), 'scheduled'"
                " FROM generate_series(1, 10)",
                a,
            )
            await conn.execute(
                "INSERT INTO automation_rules (id, instagram_account_id, name, trigger, action,"
                " enabled) SELECT gen_random_uuid(), $1, 'r', '{}', '{}', true"
                " FROM generate_series(1, 5)",
                a,
            )
            await conn.execute(
                "INSERT INTO analytics_events (tenant_id, source, instagram_account_id, name,"
                " occurred_at) SELECT $1, CASE WHEN g % 2 = 0 THEN 'site' ELSE 'instagram' END,"
                " CASE WHEN g % 2 = 0 THEN NULL ELSE $2::uuid END, 'view', now()"
                " FROM generate_series(1, $3) g",
                t,
                a,
                share,
            )
            await conn.execute(
                "INSERT INTO instagram_insights (instagram_account_id, metric, value, day)"
                " SELECT $1, 'reach', g, $2::date + g FROM generate_series(1, $3) g",
                a,
                date(2000, 1, 1),
                share,
            )
        total = 0
        for table, column, value in (
            ("tenants", "id", t),
            ("users", "tenant_id", t),
            ("site_settings", "tenant_id", t),
            ("site_pages", "tenant_id", t),
            ("media_files", "tenant_id", t),
            ("contacts", "tenant_id", t),
            ("audiences", "tenant_id", t),
            ("campaigns", "tenant_id", t),
            ("audience_members", "audience_id", audience),
            ("campaign_sends", "campaign_id", campaign),
            ("instagram_accounts", "tenant_id", t),
            ("instagram_scheduled_posts", "instagram_account_id", a),
            ("automation_rules", "instagram_account_id", a),
            ("analytics_events", "tenant_id", t),
            ("instagram_insights", "instagram_account_id", a),
        ):
            query = f"SELECT count(*) FROM {table} WHERE {column} = $1"
            total += int(await conn.fetchval(query, value))
        return total
    finally:
        await conn.close()


async def seed_large_mongo(db: Any, large: Large, docs: int) -> int:
    now = datetime.now(UTC)
    common = {
        "tenant_id": str(large.tenant),
        "instagram_account_id": str(large.account),
        "ig_user_id": large.ig_user_id,
        "created_at": now,
    }
    for name, extra in (
        ("instagram_messages", {"thread_id": "t", "from_id": "9", "text": "hello there"}),
        ("instagram_comments", {"media_id": "m", "from_username": "fan", "text": "nice"}),
    ):
        count = docs // 2
        for start in range(0, count, 10_000):
            n = min(10_000, count - start)
            await db[name].insert_many([{**common, **extra, "n": start + i} for i in range(n)])
    return docs // 2 * 2


async def _bounded(coroutines: list[Any], limit: int = 48) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def run(coroutine: Any) -> None:
        async with semaphore:
            await coroutine

    await asyncio.gather(*(run(c) for c in coroutines))


async def seed_large_s3(s3: Any, large: Large, versions: int, cache: int) -> tuple[int, int]:
    keys = [f"tenants/{large.tenant}/uploads/{i}.bin" for i in range(versions // 2)]
    for body in (b"v1", b"v2"):
        await _bounded([s3.put_object(Bucket=MEDIA, Key=k, Body=body) for k in keys])
    await _bounded([s3.delete_object(Bucket=MEDIA, Key=k) for k in keys[::10]])
    cached = [f"instagram/{large.ig_user_id}/media/{i}.jpg" for i in range(cache)]
    await _bounded([s3.put_object(Bucket=CACHE, Key=k, Body=b"img") for k in cached])
    return len(keys) * 2 + len(keys[::10]), len(cached)


async def seed_large(stack: Stack, rows: int, docs: int, versions: int, cache: int) -> Large:
    tenant = uuid.uuid4()
    large = Large(tenant, uuid.uuid4(), str(17_900_000_000_000_000 + tenant.int % 10**12))
    started = time.monotonic()
    large.rows, large.docs, (large.versions, large.cache) = await asyncio.gather(
        seed_large_postgres(stack.pg_dsn, large, rows, versions // 2),
        seed_large_mongo(stack.db, large, docs),
        seed_large_s3(stack.s3, large, versions, cache),
    )
    stack.graph.grant_user("instagram", large.ig_user_id, f"IGQV-large-{tenant.hex}")
    large.seed_seconds = time.monotonic() - started
    print(
        f"  seeded {large.rows:,} rows, {large.docs:,} documents, {large.versions:,} versions"
        f" + {large.cache:,} cached objects in {large.seed_seconds:.0f} s",
        flush=True,
    )
    return large


async def seed_small(stack: Stack, count: int) -> None:
    for _ in range(count):
        world = make_world()
        await seed_postgres(stack.pg_dsn, world)
        await seed_mongo(stack.db, world)
        await seed_s3(stack.s3, world)
        stack.graph.add_world(world)
        stack.worlds.append(world)


async def snapshot(stack: Stack) -> tuple[Any, Any, Any]:
    return (
        await snapshot_postgres(stack.pg_dsn),
        await snapshot_mongo(stack.db),
        await snapshot_s3(stack.s3),
    )


# ------------------------------------------------------------------ the service


class Client:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token()}"},
            timeout=30,
            trust_env=False,
        )

    async def create(self, kind: str, subject: dict[str, str]) -> str:
        response = await self.http.post(
            "/v1/deletion-requests", json={"kind": kind, "subject": subject}
        )
        if response.status_code != 202:
            raise RuntimeError(f"create answered {response.status_code}: {response.text}")
        return str(response.json()["id"])

    async def wait(self, request_id: str, interval: float, timeout: float = 1800) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            response = await self.http.get(f"/v1/deletion-requests/{request_id}")
            body: dict[str, Any] = response.json()
            if body["status"] == "completed":
                return body
            if body["status"] in ("failed", "cancelled"):
                raise RuntimeError(f"request {request_id} ended {body['status']}: {body['tasks']}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"request {request_id} not completed in {timeout} s")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        await self.http.aclose()


def task_seconds(request: dict[str, Any]) -> dict[str, float]:
    seconds = {}
    for task in request["tasks"]:
        if task["started_at"] and task["finished_at"]:
            started = datetime.fromisoformat(task["started_at"])
            finished = datetime.fromisoformat(task["finished_at"])
            seconds[task["purger"]] = (finished - started).total_seconds()
    return seconds


async def service_purge(client: Client, large: Large) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    request_id = await client.create("account", {"tenant_id": str(large.tenant)})
    body = await client.wait(request_id, interval=0.1)
    return time.monotonic() - started, body


def disconnect_targets(stack: Stack) -> list[dict[str, str]]:
    return [
        {"tenant_id": str(tenant.id), "instagram_account_id": str(account.id)}
        for world in stack.worlds
        for tenant in world.tenants.values()
        for account in tenant.accounts
    ]


async def disconnect(
    client: Client, subject: dict[str, str], interval: float = 0.05
) -> dict[str, Any]:
    """One disconnect. ``seconds``: from the service's ``created_at`` (stamped as the
    ``POST`` is accepted) to its ``completed_at``; ``observed``: from sending the ``POST``
    until a ``GET`` (every ``interval``) saw it completed, which adds up to ``interval``
    and the polling's own load. ``cut``: until the PostgreSQL step finished (scheduled
    posts cancelled, automations disabled, account marked disconnected: it waits for
    nothing, #16); ``tokens``: until the Meta step finished too (revoked at Meta, then the
    tokens destroyed). ``started``/``ended`` are the bench's clock (overlap with a purge)."""
    started = time.monotonic()
    request_id = await client.create("instagram_disconnect", subject)
    body = await client.wait(request_id, interval=interval)
    ended = time.monotonic()
    created = datetime.fromisoformat(body["created_at"])
    finished = {
        t["purger"]: (datetime.fromisoformat(t["finished_at"]) - created).total_seconds()
        for t in body["tasks"]
        if t["finished_at"]
    }
    observed = ended - started
    seconds = (
        (datetime.fromisoformat(body["completed_at"]) - created).total_seconds()
        if body.get("completed_at")
        else observed
    )
    cut = finished.get("postgres", seconds)
    tokens = max(cut, finished.get("meta_graph", cut))
    return {
        "seconds": seconds,
        "observed": observed,
        "cut": cut,
        "tokens": tokens,
        "tasks": task_seconds(body),
        "started": started,
        "ended": ended,
        "completed_at": body.get("completed_at"),
    }


async def disconnects(client: Client, targets: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [await disconnect(client, subject) for subject in targets]


async def status_of(client: Client, request_id: str) -> str:
    response = await client.http.get(f"/v1/deletion-requests/{request_id}")
    return str(response.json()["status"])


async def disconnects_during(
    client: Client, request_id: str, targets: list[dict[str, str]], every: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """While ``request_id`` runs, one disconnect every ``every`` seconds (each in a task of
    its own: they arrive on a clock, not one after the other). Returns every sample, marked
    ``overlapped`` when it completed (the service's ``completed_at``) before the large
    request did, and the large request as last seen. The disconnects poll every
    :data:`LOAD_POLL` s, the large request every second: polling is load on the service
    that no real client (Meta's callback) adds; the figures are the service's timestamps."""
    done = asyncio.Event()
    large: dict[str, Any] = {}

    async def watch() -> None:
        while True:
            response = await client.http.get(f"/v1/deletion-requests/{request_id}")
            large.update(response.json())
            if large["status"] in ("completed", "failed", "cancelled"):
                done.set()
                return
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch())
    tasks: list[asyncio.Task[dict[str, Any]]] = []
    for subject in targets:
        if done.is_set():
            break
        tasks.append(asyncio.create_task(disconnect(client, subject, interval=LOAD_POLL)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=every)
    samples = list(await asyncio.gather(*tasks))
    await watcher
    ended = large.get("completed_at")
    for sample in samples:
        sample["overlapped"] = bool(ended) and (
            datetime.fromisoformat(sample["completed_at"]) <= datetime.fromisoformat(ended)
        )
    return samples, large


# ------------------------------------------------------------------ the floor


FLOOR_SQL = [
    "DELETE FROM audience_members WHERE audience_id IN"
    " (SELECT id FROM audiences WHERE tenant_id = $1)"
    " OR contact_id IN (SELECT id FROM contacts WHERE tenant_id = $1)",
    "DELETE FROM campaign_sends WHERE campaign_id IN"
    " (SELECT id FROM campaigns WHERE tenant_id = $1)"
    " OR contact_id IN (SELECT id FROM contacts WHERE tenant_id = $1)",
    "DELETE FROM analytics_events WHERE tenant_id = $1 OR instagram_account_id IN"
    " (SELECT id FROM instagram_accounts WHERE tenant_id = $1)",
    *(
        f"DELETE FROM {table} WHERE instagram_account_id IN"
        " (SELECT id FROM instagram_accounts WHERE tenant_id = $1)"
        for table in (
            "instagram_insights",
            "instagram_scheduled_posts",
            "instagram_published_posts",
            "automation_rules",
        )
    ),
    *(
        f"DELETE FROM {table} WHERE tenant_id = $1"
        for table in (
            "instagram_accounts",
            "contacts",
            "audiences",
            "campaigns",
            "media_files",
            "site_pages",
            "site_settings",
            "users",
        )
    ),
    "UPDATE billing_invoices SET tenant_id = NULL WHERE tenant_id = $1",
    "DELETE FROM tenants WHERE id = $1",
]


async def floor_postgres(dsn: str, large: Large) -> float:
    started = time.monotonic()
    conn = await asyncpg.connect(dsn)
    try:
        for statement in FLOOR_SQL:
            await conn.execute(statement, large.tenant)
    finally:
        await conn.close()
    return time.monotonic() - started


async def floor_mongo(db: Any, large: Large) -> float:
    """Per collection, one read of the tenant's ``_id`` values in order (keeping every
    32,000th as a bound), then ``delete_many`` of ``tenant AND _id <= bound`` per bound and
    of the rest. The fewest operations FerretDB accepts: it refuses one ``delete_many``
    over 32,766 matches on its SQLite backend (65,535 on PostgreSQL), pushes down only the
    equality (``$and`` or ``$in`` it runs in Go over the whole collection), and fetches
    every document the equality matches for each operation (it applies ``$lte``, sort and
    limit in Go), so a read per batch would double what it fetches.
    """
    started = time.monotonic()
    selection = {"tenant_id": str(large.tenant)}
    for name in ("instagram_messages", "instagram_comments"):
        bounds = []
        cursor = db[name].find(selection, {"_id": 1}, sort=[("_id", 1)], batch_size=10_000)
        seen = 0
        async for document in cursor:
            seen += 1
            if seen % FLOOR_CHUNK == 0:
                bounds.append(document["_id"])
        for bound in bounds:
            await db[name].delete_many({**selection, "_id": {"$lte": bound}})
        await db[name].delete_many(selection)
    return time.monotonic() - started


async def floor_s3(s3: Any, large: Large) -> float:
    started = time.monotonic()

    async def bucket(name: str, prefix: str) -> None:
        entries = []
        async for page in s3.get_paginator("list_object_versions").paginate(
            Bucket=name, Prefix=prefix
        ):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                entries.append({"Key": item["Key"], "VersionId": item["VersionId"]})
        for start in range(0, len(entries), 1000):
            await s3.delete_objects(
                Bucket=name, Delete={"Objects": entries[start : start + 1000], "Quiet": True}
            )

    await asyncio.gather(
        bucket(MEDIA, f"tenants/{large.tenant}/"),
        bucket(CACHE, f"instagram/{large.ig_user_id}/"),
    )
    return time.monotonic() - started


async def floor_purge(stack: Stack, large: Large) -> tuple[float, dict[str, float]]:
    started = time.monotonic()
    pg, mongo, s3 = await asyncio.gather(
        floor_postgres(stack.pg_dsn, large),
        floor_mongo(stack.db, large),
        floor_s3(stack.s3, large),
    )
    return time.monotonic() - started, {"postgres": pg, "mongodb": mongo, "s3": s3}


async def left_of(stack: Stack, large: Large) -> dict[str, int]:
    """What is left of the large tenant anywhere (must be all zero after a purge)."""
    conn = await asyncpg.connect(stack.pg_dsn)
    try:
        pg = int(
            await conn.fetchval(
                "SELECT (SELECT count(*) FROM tenants WHERE id = $1)"
                " + (SELECT count(*) FROM contacts WHERE tenant_id = $1)"
                " + (SELECT count(*) FROM analytics_events WHERE tenant_id = $1)"
                " + (SELECT count(*) FROM instagram_insights WHERE instagram_account_id = $2)",
                large.tenant,
                large.account,
            )
        )
    finally:
        await conn.close()
    docs = 0
    for name in ("instagram_messages", "instagram_comments"):
        docs += await stack.db[name].count_documents({"tenant_id": str(large.tenant)})
    s3 = 0
    for bucket, prefix in ((MEDIA, f"tenants/{large.tenant}/"), (CACHE, "instagram/")):
        page = await stack.s3.list_object_versions(Bucket=bucket, Prefix=prefix, MaxKeys=10)
        found = page.get("Versions", []) + page.get("DeleteMarkers", [])
        s3 += sum(1 for v in found if large.ig_user_id in v["Key"] or str(large.tenant) in v["Key"])
    return {"postgres": pg, "mongodb": docs, "s3": s3}


# ------------------------------------------------------------------ the run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=200_000, help="PostgreSQL rows")
    parser.add_argument("--docs", type=int, default=200_000, help="MongoDB documents")
    parser.add_argument("--versions", type=int, default=20_000, help="S3 object versions")
    parser.add_argument("--cache", type=int, default=5_000, help="cached-media objects")
    parser.add_argument("--small-tenants", type=int, default=4, help="small worlds (3 tenants)")
    parser.add_argument(
        "--disconnects", type=int, default=10, help="disconnects with the worker idle"
    )
    parser.add_argument(
        "--load-disconnects",
        type=int,
        default=60,
        help="at most this many disconnects, one a second, during the large deletion",
    )
    parser.add_argument(
        "--load-fraction", type=float, default=1.0, help="size of the under-load purge"
    )
    parser.add_argument(
        "--half-fraction",
        type=float,
        default=0.5,
        help="size of the second purge whose peak RSS is compared (0: none)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the service's purge")


# Every phase, small sizes (too short for 10 disconnects under load): seeding is most of
# it (20,000 documents took 16-24 s a time on 2026-12-03, four times a run).
QUICK: dict[str, Any] = {
    "rows": 8_000,
    "docs": 8_000,
    "versions": 1_000,
    "cache": 200,
    "small_tenants": 2,
    "disconnects": 5,
    "load_disconnects": 10,
    "load_fraction": 1.0,
    "half_fraction": 0.5,
}
DISCONNECT_EVERY = 1.0  # seconds between two disconnects under load (#18: one a second)
LOAD_POLL = 2.0  # seconds between two GETs of one disconnect under load


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    try:
        return subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pg, ferret, moto = start_postgres(), start_ferretdb(), start_moto()
    graph = FakeGraph().start()
    result: dict[str, Any] = {"sizes": vars(args).copy(), "ferretdb_backend": ferret.backend}
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferret.url)
    wall = time.monotonic()
    try:
        pg.create_database("soundops")
        pg.psql_file("soundops", SCHEMA)
        pg.create_database("tracking")
        await upgrade(pg.url("tracking"))
        env = service_env(
            database_url=pg.url("tracking"),
            target_postgres_url=pg.url("soundops"),
            mongodb_url=ferret.url,
            mongodb_database=MONGO_DB,
            s3_endpoint_url=moto.endpoint_url,
            s3_enabled="true",
            token_encryption_key=FERNET_KEY.decode(),
            meta_graph_url=graph.facebook_url,
            instagram_graph_url=graph.instagram_url,
        )
        env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        async with get_session().create_client(
            "s3",
            endpoint_url=moto.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ) as s3:
            await create_buckets(s3)
            stack = Stack(pg.url("soundops"), mongo, s3, graph)
            needed = args.disconnects + args.load_disconnects
            await seed_small(stack, args.small_tenants)
            while len(disconnect_targets(stack)) < needed:
                await seed_small(stack, 1)
            targets = disconnect_targets(stack)
            result["small_tenant_count"] = sum(len(w.tenants) for w in stack.worlds)
            idle_targets = targets[: args.disconnects]
            load_targets = targets[args.disconnects : needed]
            before = await snapshot(stack)

            # Each service process starts before its large tenant is seeded: the worker's
            # retention pass at start (a sweep on FerretDB, which refuses TTL indexes) is
            # then over small collections and done before anything is timed.
            service = ServiceProcess(env, "purge")
            client = Client(service.url)
            try:
                print("phase 1: the large tenant seeded; disconnects, worker idle", flush=True)
                large = await seed_large(stack, args.rows, args.docs, args.versions, args.cache)
                result["seeded"] = {
                    "rows": large.rows,
                    "docs": large.docs,
                    "versions": large.versions,
                    "cache": large.cache,
                    "seconds": round(large.seed_seconds, 1),
                }
                result["disconnect_idle"] = await disconnects(client, idle_targets)

                print("phase 2: large account deletion through the service", flush=True)
                result["service"] = await measured_purge(
                    client, service, large, profile=args.profile
                )
                result["service_left"] = await left_of(stack, large)
                result["survivors_after_service"] = await survivors(stack, before, idle_targets)
            finally:
                await client.close()
                service.close()

            print("phase 3: the same data deleted by the floor script", flush=True)
            large = await seed_large(stack, args.rows, args.docs, args.versions, args.cache)
            cpu_before = cpu_snapshot()
            seconds, shares = await floor_purge(stack, large)
            cpu = cpu_used(cpu_before, cpu_snapshot())
            result["floor"] = {"seconds": seconds, "stores": shares, "cpu": cpu}
            print(f"  floor: {seconds:.1f} s {shares}", flush=True)
            result["floor_left"] = await left_of(stack, large)
            result["survivors_after_floor"] = await survivors(stack, before, idle_targets)

            print("phase 4: disconnects, one a second, while a large deletion runs", flush=True)
            service = ServiceProcess(env, "load")
            client = Client(service.url)
            try:
                large = await seed_large(stack, *_sized(args, args.load_fraction))
                request_id = await client.create("account", {"tenant_id": str(large.tenant)})
                while await status_of(client, request_id) == "pending":
                    await asyncio.sleep(0.05)
                profiler = _profile(service.pid, 600, LOAD_PROFILE_OUT) if args.profile else None
                samples, body = await disconnects_during(
                    client, request_id, load_targets, DISCONNECT_EVERY
                )
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)
                    profiler.wait(timeout=60)
                    if LOAD_PROFILE_OUT.exists():
                        result["load_profile"] = profile.summarize(LOAD_PROFILE_OUT)
                if body["status"] != "completed":
                    raise RuntimeError(f"the large request ended {body['status']}")
                result["disconnect_load"] = samples
                result["load_purge"] = {
                    "seconds": (
                        datetime.fromisoformat(body["completed_at"])
                        - datetime.fromisoformat(body["created_at"])
                    ).total_seconds(),
                    "tasks": task_seconds(body),
                    "rows": large.rows,
                    "docs": large.docs,
                    "versions": large.versions + large.cache,
                    "peak_rss_mb": service.peak_rss_mb(),
                }
                result["load_left"] = await left_of(stack, large)
                disconnected = idle_targets + load_targets[: len(samples)]
                result["survivors_after_load"] = await survivors(stack, before, disconnected)
            finally:
                await client.close()
                service.close()

            if args.half_fraction > 0:
                print("phase 5: a purge of the smaller size, for peak RSS", flush=True)
                service = ServiceProcess(env, "half")
                client = Client(service.url)
                try:
                    large = await seed_large(stack, *_sized(args, args.half_fraction))
                    result["half"] = await measured_purge(client, service, large)
                    result["half"].update(
                        rows=large.rows, docs=large.docs, objects=large.versions + large.cache
                    )
                    result["half_left"] = await left_of(stack, large)
                finally:
                    await client.close()
                    service.close()
    finally:
        await mongo.close()
        graph.close()
        moto.close()
        ferret.close()
        pg.close()
    result["wall_seconds"] = round(time.monotonic() - wall, 1)
    result["verdicts"] = verdicts(result)
    return result


def _sized(args: argparse.Namespace, fraction: float) -> tuple[int, int, int, int]:
    return (
        int(args.rows * fraction),
        int(args.docs * fraction),
        int(args.versions * fraction),
        int(args.cache * fraction),
    )


async def measured_purge(
    client: Client, service: ServiceProcess, large: Large, *, profile: bool = False
) -> dict[str, Any]:
    """The large tenant's account deletion, ``POST`` to ``completed``, with the process's
    CPU and peak RSS (optionally under py-spy)."""
    rss_before = service.rss_mb()
    profiler = _profile(service.pid, 600, PROFILE_OUT) if profile else None
    cpu_before = cpu_snapshot()
    seconds, body = await service_purge(client, large)
    cpu = cpu_used(cpu_before, cpu_snapshot())
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        profiler.wait(timeout=60)
    print(f"  service: {seconds:.1f} s {task_seconds(body)}", flush=True)
    return {
        "seconds": seconds,
        "tasks": task_seconds(body),
        "deleted": {t["purger"]: sum(t["deleted"].values()) for t in body["tasks"]},
        "rss_before_mb": rss_before,
        "peak_rss_mb": service.peak_rss_mb(),
        "cpu": cpu,
    }


def _without(snap: Any, needles: set[str]) -> list[dict[str, list[Any]]]:
    """A snapshot (PostgreSQL, MongoDB, S3) less every row, document and object version
    that names one of ``needles``."""
    return [
        {
            name: [r for r in rows if not any(n in str(r) for n in needles)]
            for name, rows in store.items()
        }
        for store in snap
    ]


async def survivors(stack: Stack, before: Any, disconnected: list[dict[str, str]]) -> bool:
    """Nothing of the small tenants was lost or changed, except what their disconnects
    were asked to change: the disconnected accounts' rows (marked disconnected, posts
    cancelled, automations off: by the disconnect's rules, tested elsewhere) and their
    MongoDB documents, which must be gone."""
    after = await snapshot(stack)
    gone = {t["instagram_account_id"] for t in disconnected}
    mongo_after = after[1]
    if any(g in d for docs in mongo_after.values() for d in docs for g in gone):
        return False
    return _without(before, gone) == _without(after, gone)


def disconnect_medians(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    if not samples:
        return {"n": 0, "completed": None, "cut": None}
    return {
        "n": float(len(samples)),
        "completed": statistics.median(d["seconds"] for d in samples),
        "cut": statistics.median(d["cut"] for d in samples),
    }


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    """Issue #18's targets 3 and 4, from a result."""
    idle = disconnect_medians(result["disconnect_idle"])
    overlapped = [d for d in result["disconnect_load"] if d.get("overlapped")]
    load = disconnect_medians(overlapped)
    ratio = result["service"]["seconds"] / result["floor"]["seconds"]
    full_mb = result["service"]["peak_rss_mb"] * MIB
    half_mb = result["half"]["peak_rss_mb"] * MIB if "half" in result else None
    return {
        "disconnect_idle": idle,
        "disconnect_load": load,
        "disconnect_idle_met": idle["completed"] is not None and idle["completed"] < 1.0,
        "disconnect_load_met": (
            (load["n"] or 0) >= 10
            and load["completed"] is not None
            and load["completed"] < 3.0
            and load["cut"] is not None
            and load["cut"] < 1.0
        ),
        "purge_ratio": ratio,
        "purge_met": ratio <= 1.2,
        "purge_moonshot_met": ratio <= 1.05,
        "peak_rss_mb_full": full_mb,
        "peak_rss_mb_half": half_mb,
        "rss_met": full_mb < 300 and (half_mb is None or full_mb <= half_mb * RSS_FLAT),
    }


def figures(result: dict[str, Any] | None) -> dict[str, Any]:
    """The headline figures of a result of this part, of any earlier shape (what a result
    lacks is None): for the "before" column."""
    if not result:
        return {}
    out: dict[str, Any] = {"date": result.get("date"), "backend": result.get("ferretdb_backend")}
    with contextlib.suppress(KeyError, TypeError, ZeroDivisionError):
        out["service"] = result["service"]["seconds"]
        out["floor"] = result["floor"]["seconds"]
        out["ratio"] = out["service"] / out["floor"]
        for store in ("postgres", "mongodb", "s3"):
            service = result["service"]["tasks"].get(store)
            floor = result["floor"]["stores"].get(store)
            if service is not None and floor:
                out[f"ratio_{store}"] = service / floor
    with contextlib.suppress(KeyError, TypeError, statistics.StatisticsError):
        idle = result["disconnect_idle"]
        out["idle_completed"] = statistics.median(d["seconds"] for d in idle)
        out["idle_cut"] = statistics.median(d["cut"] for d in idle)
    with contextlib.suppress(KeyError, TypeError, statistics.StatisticsError):
        load = [d for d in result["disconnect_load"] if d["overlapped"]]
        out["load_n"] = len(load)
        out["load_completed"] = statistics.median(d["seconds"] for d in load)
        out["load_cut"] = statistics.median(d["cut"] for d in load)
    with contextlib.suppress(KeyError, TypeError):
        out["rss_full"] = result["service"]["peak_rss_mb"]
    with contextlib.suppress(KeyError, TypeError):
        out["rss_half"] = result["half"]["peak_rss_mb"]
    return out


def _was(before: dict[str, Any], key: str, fmt: str) -> str:
    return previously(before, key, fmt=fmt)


def render(result: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    now, was = figures(result), figures(previous)
    service, floor = result["service"], result["floor"]
    verdict = result.get("verdicts") or verdicts(result)
    seeded = result["seeded"]
    idle = result["disconnect_idle"]
    samples = result["disconnect_load"]
    overlapped = [d for d in samples if d["overlapped"]]
    load = result["load_purge"]
    when = f"{was.get('date') or '-'}, {was.get('backend') or 'sqlite'} backend" if was else "-"
    stores = ("postgres", "mongodb", "s3")
    lines = [
        "## Large account purge against the floor",
        "",
        f"Measured {result.get('date', '?')} on FerretDB's {result['ferretdb_backend']} backend"
        f" (in a PostgreSQL cluster of its own); the whole part took"
        f" {result.get('wall_seconds', 0) / 60:.1f} min. One tenant with {seeded['rows']:,}"
        f" PostgreSQL rows, {seeded['docs']:,} MongoDB documents, {seeded['versions']:,} S3"
        f" object versions and delete markers and {seeded['cache']:,} cached-media objects"
        f" (seeded in {seeded['seconds']:.0f} s), next to {result['small_tenant_count']} small"
        " tenants that must survive. Service: `POST` to `completed`, verification included,"
        " one `soundops-deletion serve` process with its worker. Floor: a plain script on the"
        " same drivers, no verification, stores concurrently; per MongoDB collection one read"
        " of the tenant's `_id`s and `_id`-range `delete_many`s of 32,000 (FerretDB's limits:"
        " 32,766 matches on SQLite, 65,535 on PostgreSQL).",
        "",
        f"| | total | before ({when}) | PostgreSQL | MongoDB | S3 | Meta |",
        "|---|---:|---:|---:|---:|---:|---:|",
        "| service (s) | {:.1f} | {} | {} | {} | {} | {} |".format(
            service["seconds"],
            _was(was, "service", "{:.1f}"),
            *(_cell(service["tasks"].get(n)) for n in (*stores, "meta_graph")),
        ),
        "| floor (s) | {:.1f} | {} | {} | {} | {} | - |".format(
            floor["seconds"],
            _was(was, "floor", "{:.1f}"),
            *(_cell(floor["stores"][n]) for n in stores),
        ),
        "| service / floor | **{:.2f}x** | {} | {} | {} | {} | |".format(
            now["ratio"],
            _was(was, "ratio", "{:.2f}x"),
            *(_ratio(service["tasks"].get(n), floor["stores"][n]) for n in stores),
        ),
        "",
        "Each store's share of the service's wall time (the stores run concurrently, so the"
        " slowest one is the critical path): "
        + ", ".join(
            f"{n} {100 * s / service['seconds']:.0f}%"
            for n, s in sorted(service["tasks"].items(), key=lambda kv: -kv[1])
        )
        + ".",
        "",
        _bound_by(service, result.get("ferretdb_backend", "sqlite")),
        "",
        'CPU seconds spent by each process during the purge (2 cores; "other" is'
        " whatever else ran on the machine, other people's work included):",
        "",
        _cpu_table(service.get("cpu", {}), floor.get("cpu", {})),
        "",
        f"Left of the tenant afterwards (service / floor): {result['service_left']} /"
        f" {result['floor_left']}. Small tenants unchanged (but for what their disconnects"
        f" changed) after the service: {_yes(result['survivors_after_service'])}; after the"
        f" floor: {_yes(result['survivors_after_floor'])}.",
        "",
        f"Target (#18): within 1.2x of the floor: **{_met(verdict['purge_met'])}**"
        f" ({now['ratio']:.2f}x; moonshot 1.05x: {_met(verdict['purge_moonshot_met'])}).",
        "",
        "## Disconnect latency",
        "",
        _disconnect_definition(idle),
        f" Idle: one after the other, the large tenant's {seeded['docs']:,} documents in the"
        f" collections and nothing running. Under load: one every {DISCONNECT_EVERY:g} s (each"
        f" on its own, not waiting for the one before) from the moment a {load['docs']:,}"
        f"-document, {load['rows']:,}-row account deletion is claimed until it completes"
        f" ({load['seconds']:.0f} s); a sample counts when it completed before that deletion.",
        "",
        "| worker | n | completed median / p95 (s) | observed median (s) | cut median / p95"
        " (s) | MongoDB step (s) | before: n, completed / cut median (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        _latency_row("idle", idle, was, "idle"),
        _latency_row(f"during the {load['docs']:,}-document deletion", overlapped, was, "load"),
        "",
        f"Under load {len(overlapped)} of {len(samples)} disconnects completed while the large"
        " deletion still ran. Targets (#18): median under 1 s idle:"
        f" **{_met(verdict['disconnect_idle_met'])}** ({_s(now.get('idle_completed'))}); under"
        f" 3 s, connection cut under 1 s, with at least 10 samples under load:"
        f" **{_met(verdict['disconnect_load_met'])}** ({_s(now.get('load_completed'))}, cut"
        f" {_s(now.get('load_cut'))}, n = {len(overlapped)}).",
        "",
        _disconnect_reading(overlapped, result.get("ferretdb_backend", "sqlite")),
        "",
        f"Left of the large tenant afterwards: {result.get('load_left')}; small tenants"
        " unchanged but for their disconnects:"
        f" {_yes(result.get('survivors_after_load', False))}.",
        *(
            [
                "",
                "Where the service process's CPU went during this phase (py-spy):",
                "",
                profile.render(result["load_profile"]),
            ]
            if result.get("load_profile")
            else []
        ),
        "",
        "## Memory",
        "",
        "Peak RSS (VmHWM) of the service process (a fresh one for each size), which also ran"
        " the HTTP API:",
        "",
        "| purge size | rows | documents | S3 objects | purge (s) | peak RSS (MiB)"
        " | before (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| full | {seeded['rows']:,} | {seeded['docs']:,} |"
        f" {seeded['versions'] + seeded['cache']:,} | {service['seconds']:.1f} |"
        f" {service['peak_rss_mb']:.0f} | {_was(was, 'rss_full', '{:.0f}')} |",
    ]
    if "half" in result:
        half = result["half"]
        fraction = result["sizes"].get("half_fraction", 0.5)
        lines.append(
            f"| {fraction:g} | {half['rows']:,} | {half['docs']:,} | {half['objects']:,} |"
            f" {half['seconds']:.1f} | {half['peak_rss_mb']:.0f} |"
            f" {_was(was, 'rss_half', '{:.0f}')} |"
        )
    full_mb = verdict["peak_rss_mb_full"]
    half_mb = verdict["peak_rss_mb_half"]
    growth = f", {full_mb / half_mb:.2f}x the half size's" if half_mb else ""
    lines += [
        "",
        f"Target (#18): under 300 MB and flat from half to full size (at most {RSS_FLAT:g}x):"
        f" **{_met(verdict['rss_met'])}** ({full_mb:.0f} MB at the full size{growth}).",
    ]
    return "\n".join(lines)


def _met(value: bool) -> str:
    return "met" if value else "missed"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _bound_by(service: dict[str, Any], backend: str) -> str:
    """What dominates, from the CPU table: the busiest process against the wall time."""
    cpu: dict[str, float] = service.get("cpu", {})
    if not cpu:
        return ""
    busiest, seconds = max(cpu.items(), key=lambda kv: kv[1])
    own = cpu.get("service", 0.0)
    return (
        f"What dominates: **{busiest}**, {seconds:.0f} CPU s in {service['seconds']:.0f} s of"
        f" wall time ({100 * seconds / service['seconds']:.0f}% of one core); the service"
        f" process itself used {own:.1f} CPU s ({100 * own / service['seconds']:.0f}% of one"
        " core), so the purge waits on its stores, not on Python. "
        + (
            "FerretDB (SQLite backend) uses no index for these filters: every batch read,"
            " batch delete and verification count scans the whole collection."
            if backend == "sqlite"
            else "FerretDB (PostgreSQL backend) pushes these equality filters down to SQL;"
            " its own PostgreSQL cluster does the work it is given."
        )
    )


def _disconnect_definition(samples: list[dict[str, Any]]) -> str:
    text = (
        "`instagram_disconnect` of a small tenant's account: **completed** is from the"
        " request's `created_at` (stamped as its `POST` is accepted) to its `completed_at`"
        " (Graph API calls to the fake Meta server, PostgreSQL updates, MongoDB deletes, each"
        " verified); **observed** is from sending the `POST` until a `GET` saw it completed"
        " (polled every 0.05 s idle, 2 s under load); **cut** is until the PostgreSQL"
        " step had finished"
        " (scheduled posts cancelled, automations disabled, the account marked"
        " `disconnected`): it runs first and waits for nothing, whatever Meta answers; the"
        " Meta step then revokes and destroys the tokens (by `DELETION_REVOKE_DEADLINE` at"
        " the latest)."
    )
    if samples and "tokens" not in samples[0]:
        text += (
            " *These figures are from a run before that order (#16): the Meta step ran first"
            " and **cut** was until both steps had finished (permissions revoked, webhooks"
            " gone, tokens cleared). `make bench` measures the new order.*"
        )
    return text


def _disconnect_reading(overlapped: list[dict[str, Any]], backend: str) -> str:
    if not overlapped:
        return "No disconnect completed while the large deletion ran: raise --load-fraction."
    done = statistics.median(d["seconds"] for d in overlapped)
    cut = statistics.median(d["cut"] for d in overlapped)
    mongo = statistics.median(d["tasks"].get("mongodb", 0.0) for d in overlapped)
    return (
        f"Under load the connection is cut in {cut:.2f} s (median): the worker claims the"
        f" disconnect at once, next to the large deletion. The MongoDB step takes {mongo:.1f}"
        f" s of the {done:.1f} s: it reads, deletes and recounts in both collections. "
        + (
            "On FerretDB's SQLite backend each of those operations scans a collection that"
            " still holds the large tenant's documents, competing with the large deletion's"
            " own scans."
            if backend == "sqlite"
            else "On FerretDB's PostgreSQL backend those equality filters are SQL queries"
            " that share one PostgreSQL cluster with the large deletion's batches."
        )
        + " On MongoDB the collections carry indexes on `tenant_id` and"
        " `instagram_account_id` (SoundOps' layout), so these are index look-ups."
    )


def _cpu_table(service: dict[str, float], floor: dict[str, float]) -> str:
    labels = sorted(set(service) | set(floor), key=lambda k: -(service.get(k, 0.0)))
    rows = ["| process | service run (CPU s) | floor run (CPU s) |", "|---|---:|---:|"]
    rows += [f"| {k} | {service.get(k, 0.0):.1f} | {floor.get(k, 0.0):.1f} |" for k in labels]
    return "\n".join(rows)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(service: float | None, floor: float) -> str:
    return "-" if service is None or floor <= 0 else f"{service / floor:.2f}x"


def _yes(value: bool) -> str:
    return "yes" if value else "**NO**"


def _latency_row(label: str, samples: list[dict[str, Any]], was: dict[str, Any], phase: str) -> str:
    before = (
        f"{was.get(f'{phase}_n', '-') if phase == 'load' else '-'},"
        f" {_was(was, f'{phase}_completed', '{:.2f}')} / {_was(was, f'{phase}_cut', '{:.2f}')}"
    )
    if not samples:
        return f"| {label} | 0 | - | - | - | - | {before} |"
    done = [d["seconds"] for d in samples]
    cut = [d["cut"] for d in samples]
    mongo = [d["tasks"].get("mongodb", 0.0) for d in samples]
    observed = [d.get("observed", d["seconds"]) for d in samples]
    return (
        f"| {label} | {len(samples)} | {statistics.median(done):.2f} /"
        f" {percentile(done, 0.95):.2f} | {statistics.median(observed):.2f} |"
        f" {statistics.median(cut):.2f} / {percentile(cut, 0.95):.2f} |"
        f" {statistics.median(mongo):.2f} | {before} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    print(render(result))


if __name__ == "__main__":
    main()
