"""The retention sweep on FerretDB, and what it costs a concurrent disconnect.

FerretDB refuses TTL indexes, so there the worker deletes expired Instagram documents
itself (``app.services.evidence.retention.enforce``). One run, on the real test servers
(FerretDB as the harness starts it; tracking store on SQLite, which the sweep only uses
for its lease):

1. seeds ``--docs`` documents over ``instagram_messages`` and ``instagram_comments``,
   ``--expired`` of them older than the 30-day window (the rest one day old), plus a
   small tenant's ``--small`` young documents per collection;
2. **disconnect, idle**: the small tenant's MongoDB step of an ``instagram_disconnect``
   (the purger's purge + verify, as the engine runs it), timed, ``--repeat`` times
   (its documents re-seeded each time);
3. **sweep**: one retention pass (check, apply, sweep, measure), timed; while it runs, the
   same disconnect step again, ``--repeat`` times one after the other.

Afterwards: every young document is still there, every expired one is gone.

    .venv/bin/python -m bench.retention_sweep [--sweep-docs 200000 --sweep-expired 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from app.datamap import load_datamap
from app.db import create_engine, create_sessionmaker, upgrade
from app.models import RequestKind
from app.purgers.base import Subject
from app.purgers.mongodb import MongoPurger
from app.services.evidence.retention.enforce import RetentionEnforcer
from app.settings import Settings
from app.stores import open_stores
from bench.common import previously
from testsupport.harness.services import start_ferretdb

COLLECTIONS = ("instagram_messages", "instagram_comments")
DATABASE = "soundops"


async def seed_bulk(db: Any, total: int, expired: int, now: datetime) -> None:
    per = total // len(COLLECTIONS)
    old_per = expired // len(COLLECTIONS)
    for name in COLLECTIONS:
        for start in range(0, per, 5_000):
            await db[name].insert_many(
                [
                    {
                        "tenant_id": "bulk-tenant",
                        "instagram_account_id": "bulk-account",
                        "text": "x" * 40,
                        "created_at": now - (timedelta(days=31) if i < old_per else timedelta(1)),
                    }
                    for i in range(start, min(start + 5_000, per))
                ]
            )


async def seed_small(db: Any, tenant: str, account: str, count: int, now: datetime) -> None:
    for name in COLLECTIONS:
        await db[name].insert_many(
            [
                {"tenant_id": tenant, "instagram_account_id": account, "created_at": now}
                for _ in range(count)
            ]
        )


async def disconnect_step(purger: MongoPurger, db: Any, small: int, now: datetime) -> float:
    tenant, account = str(uuid.uuid4()), str(uuid.uuid4())
    await seed_small(db, tenant, account, small, now)
    subject = Subject(
        request_id=uuid.uuid4(),
        kind=RequestKind.instagram_disconnect,
        identities={},
        resolution=_resolution(tenant, account),
    )
    started = time.perf_counter()
    result = await purger.purge(subject)
    left = await purger.verify(subject)
    elapsed = time.perf_counter() - started
    assert sum(result.deleted.values()) == small * len(COLLECTIONS), result
    assert not any(left.values()), left
    return elapsed


def _resolution(tenant: str, account: str) -> Any:
    from app.datamap import Resolution

    return Resolution(tenant_ids=[tenant], account_ids=[account])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """One run (see the module's docstring); the figures as a JSON-able dict."""
    total, expired, small, repeat = (
        args.sweep_docs,
        args.sweep_expired,
        args.sweep_small,
        args.sweep_repeat,
    )
    ferret = start_ferretdb()
    folder = tempfile.TemporaryDirectory()
    try:
        tracking = f"sqlite+aiosqlite:///{folder.name}/tracking.db"
        await upgrade(tracking)
        settings = Settings(
            environment="development",
            database_url=tracking,
            mongodb_url=ferret.url,
            mongodb_database=DATABASE,
            s3_enabled_setting=False,
        )
        stores = await open_stores(settings)
        engine = create_engine(tracking)
        try:
            db = stores.mongo[DATABASE]
            purger = MongoPurger(stores.mongo, DATABASE, load_datamap().mongodb)
            now = datetime.now(UTC)
            started = time.perf_counter()
            await seed_bulk(db, total, expired, now)
            seeded = time.perf_counter() - started
            print(f"seeded {total} documents in {seeded:.1f} s", flush=True)

            idle = [await disconnect_step(purger, db, small, now) for _ in range(repeat)]
            print(f"disconnects, idle: {idle}", flush=True)

            enforcer = RetentionEnforcer(settings, stores, create_sessionmaker(engine), "bench")
            started = time.perf_counter()
            sweep = asyncio.create_task(enforcer.run(now=now))
            during: list[float] = []
            await asyncio.sleep(1)
            for _ in range(repeat):
                if sweep.done():
                    break
                during.append(await disconnect_step(purger, db, small, now))
            done = await sweep
            sweep_seconds = time.perf_counter() - started
            assert done is not None
            swept = sum(o.swept for o in done.outcomes)
            left = {n: await db[n].count_documents({}) for n in COLLECTIONS}
            assert swept == expired, swept
            assert sum(left.values()) == total - expired, left
        finally:
            await engine.dispose()
            await stores.aclose()
    finally:
        ferret.close()
        folder.cleanup()
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "docs": total,
        "expired": expired,
        "small": small,
        "seed_seconds": round(seeded, 1),
        "batch": settings.mongodb_batch_size,
        "sweep_seconds": round(sweep_seconds, 1),
        "swept": swept,
        "disconnect_idle": [round(d, 2) for d in idle],
        "disconnect_during_sweep": [round(d, 2) for d in during],
    }
    print(result, flush=True)
    return result


QUICK: dict[str, Any] = {"sweep_docs": 20_000, "sweep_expired": 10_000, "sweep_repeat": 1}


def _median_text(previous: dict[str, Any] | None, key: str) -> str:
    values = (previous or {}).get(key)
    return f"{statistics.median(values):.1f}" if values else "-"


def render(result: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    idle = statistics.median(result["disconnect_idle"])
    was = {
        "sweep": previously(previous, "sweep_seconds", fmt="{:.1f}"),
        "idle": _median_text(previous, "disconnect_idle"),
        "during": _median_text(previous, "disconnect_during_sweep"),
    }
    during = result["disconnect_during_sweep"]
    during_text = f"{statistics.median(during):.1f}" if during else "- (the sweep was over first)"
    return "\n".join(
        [
            "## Retention sweep on FerretDB",
            "",
            f"FerretDB refuses TTL indexes, so the worker sweeps: one retention pass (check,"
            f" apply, sweep, measure) over {result['docs']:,} Instagram documents in two"
            f" collections, {result['expired']:,} of them past the 30-day window, in"
            f" `_id`-range batches of {result['batch']:,} (run {result['date']},"
            " `python -m bench --only retention`).",
            "",
            f"| | seconds | before ({previously(previous, 'date')};"
            f" {previously(previous, 'docs', fmt='{:,}')} documents) |",
            "|---|---:|---:|",
            f"| sweep of {result['swept']:,} expired documents | {result['sweep_seconds']:.1f}"
            f" | {was['sweep']} |",
            f"| a small tenant's disconnect, MongoDB step ({result['small']} documents per"
            f" collection; purge + verify), idle | {idle:.1f} | {was['idle']} |",
            f"| the same, while the sweep runs | {during_text} | {was['during']} |",
            "",
            f"Each disconnect figure is the median of {len(result['disconnect_idle'])} runs"
            f" (idle: {result['disconnect_idle']} s; during the sweep, one after the other from"
            f" its first second: {during} s). Seeding took {result['seed_seconds']:.0f} s.",
            "",
            "Every young document was still there afterwards, every expired one gone. On"
            " FerretDB (SQLite backend) every batch read and delete scans the whole collection"
            " (a `created_at` range is not pushed down), so the sweep and a concurrent"
            " disconnect compete for the same scans; on MongoDB the TTL index does this work"
            " and the sweep runs only where the store refuses the rule or"
            " `DELETION_RETENTION_SWEEP` asks for it.",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sweep-docs", type=int, default=200_000, help="documents in all")
    parser.add_argument("--sweep-expired", type=int, default=100_000, help="of them expired")
    parser.add_argument("--sweep-small", type=int, default=30, help="small tenant, per coll.")
    parser.add_argument("--sweep-repeat", type=int, default=2, help="disconnects per phase")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_arguments(parser)
    print(render(asyncio.run(run(parser.parse_args()))))
