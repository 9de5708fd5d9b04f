"""Purge times of one large tenant, per store and all stores at once, on the real test servers.

Seeds (defaults) 100,000 PostgreSQL rows, 100,000 MongoDB documents and 10,000 S3 object
versions for one tenant, next to a small tenant that must survive, then times each
purger's ``purge`` + ``verify`` on its own, and the three concurrently (as the engine runs
them), re-seeding between rounds.

    .venv/bin/python -m bench.large_tenant [--rows 100000] [--docs 100000] [--versions 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiobotocore.session import get_session
from pymongo import AsyncMongoClient

from app.datamap import Resolution, load_datamap
from app.db import create_engine
from app.models import RequestKind
from app.purgers.base import Subject
from app.purgers.mongodb import MongoPurger
from app.purgers.postgres import PostgresPurger
from app.purgers.s3 import S3Purger
from tests.harness.services import start_ferretdb, start_moto, start_postgres
from tests.seed import MEDIA, create_buckets

SCHEMA = "tests/data/soundops_schema.sql"


async def seed_postgres(dsn: str, tenant: uuid.UUID, account: uuid.UUID, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    share = rows // 5
    try:
        await conn.execute(
            "INSERT INTO tenants (id, site_name, owner_email) VALUES ($1, $2, 'big@example.com')",
            tenant,
            f"big-{tenant.hex[:6]}",
        )
        await conn.execute(
            "INSERT INTO instagram_accounts (id, tenant_id, login_family, ig_user_id, ig_username)"
            " VALUES ($1, $2, 'instagram', '1784', 'big')",
            account,
            tenant,
        )
        await conn.execute(
            "INSERT INTO contacts (id, tenant_id, email) SELECT gen_random_uuid(), $1,"
            " 'fan' || g || '@example.com' FROM generate_series(1, $2) g",
            tenant,
            share,
        )
        audience = uuid.uuid4()
        campaign = uuid.uuid4()
        await conn.execute(
            "INSERT INTO audiences (id, tenant_id, name) VALUES ($1, $2, 'all')", audience, tenant
        )
        await conn.execute(
            "INSERT INTO campaigns (id, tenant_id, name, subject) VALUES ($1, $2, 'c', 's')",
            campaign,
            tenant,
        )
        await conn.execute(
            "INSERT INTO audience_members (audience_id, contact_id)"
            " SELECT $1, id FROM contacts WHERE tenant_id = $2",
            audience,
            tenant,
        )
        await conn.execute(
            "INSERT INTO campaign_sends (id, campaign_id, contact_id, sent_at)"
            " SELECT gen_random_uuid(), $1, id, now() FROM contacts WHERE tenant_id = $2",
            campaign,
            tenant,
        )
        await conn.execute(
            "INSERT INTO analytics_events (tenant_id, source, name, occurred_at)"
            " SELECT $1, 'site', 'view', now() FROM generate_series(1, $2)",
            tenant,
            share,
        )
        await conn.execute(
            "INSERT INTO instagram_insights (instagram_account_id, metric, value, day)"
            " SELECT $1, 'reach', g, current_date FROM generate_series(1, $2) g",
            account,
            share,
        )
    finally:
        await conn.close()


async def seed_mongo(db: Any, tenant: uuid.UUID, account: uuid.UUID, docs: int) -> None:
    now = datetime.now(UTC)
    for name in ("instagram_messages", "instagram_comments"):
        batch = [
            {
                "tenant_id": str(tenant),
                "instagram_account_id": str(account),
                "ig_user_id": "1784",
                "text": "hello",
                "created_at": now,
            }
            for _ in range(docs // 2)
        ]
        for start in range(0, len(batch), 5000):
            await db[name].insert_many(batch[start : start + 5000])


async def seed_s3(s3: Any, tenant: uuid.UUID, versions: int) -> None:
    semaphore = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with semaphore:
            await s3.put_object(Bucket=MEDIA, Key=key, Body=b"x")

    keys = [f"tenants/{tenant}/uploads/{i}.bin" for i in range(versions // 2)]
    for _ in range(2):
        await asyncio.gather(*(put(k) for k in keys))


async def main(args: argparse.Namespace) -> None:
    pg, ferret, moto = start_postgres(), start_ferretdb(), start_moto()
    datamap = load_datamap()
    try:
        pg.create_database("soundops")
        pg.psql_file("soundops", SCHEMA)
        engine = create_engine(pg.url("soundops"))
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferret.url)
        async with get_session().create_client(
            "s3",
            endpoint_url=moto.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ) as s3:
            await create_buckets(s3)
            purgers = {
                "postgres": PostgresPurger(engine, datamap.postgres),
                "mongodb": MongoPurger(mongo, "soundops", datamap.mongodb),
                "s3": S3Purger(s3, datamap.s3),
            }

            async def seed(which: set[str]) -> Subject:
                tenant, account = uuid.uuid4(), uuid.uuid4()
                started = time.monotonic()
                if "postgres" in which:
                    await seed_postgres(pg.url("soundops"), tenant, account, args.rows)
                if "mongodb" in which:
                    await seed_mongo(mongo["soundops"], tenant, account, args.docs)
                if "s3" in which:
                    await seed_s3(s3, tenant, args.versions)
                print(f"  seeded {sorted(which)} in {time.monotonic() - started:.1f} s")
                resolution = Resolution(
                    tenant_ids=[str(tenant)], account_ids=[str(account)], ig_user_ids=["1784"]
                )
                return Subject(uuid.uuid4(), RequestKind.account, {}, resolution)

            async def timed(name: str, subject: Subject) -> tuple[str, float, dict[str, int]]:
                started = time.monotonic()
                result = await purgers[name].purge(subject)
                left = await purgers[name].verify(subject)
                assert not any(left.values()), left
                return name, time.monotonic() - started, result.deleted

            for name in purgers:
                subject = await seed({name})
                _, seconds, deleted = await timed(name, subject)
                print(f"{name}: {sum(deleted.values()):,} deleted in {seconds:.1f} s (verified)")
            subject = await seed(set(purgers))
            started = time.monotonic()
            results = await asyncio.gather(*(timed(n, subject) for n in purgers))
            total = time.monotonic() - started
            shares = ", ".join(f"{n} {s:.1f} s" for n, s, _ in results)
            print(f"all three concurrently: {total:.1f} s ({shares})")
        await mongo.close()
        await engine.dispose()
    finally:
        moto.close()
        ferret.close()
        pg.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--versions", type=int, default=10_000)
    asyncio.run(main(parser.parse_args()))
