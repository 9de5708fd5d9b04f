"""Third-party deletion on large collections, against the floor.

A ``meta_data`` request by ``ig_username`` for a person who was never a customer (no
connection on file) and who wrote ``--tp-written`` comments and messages, spread over
``--tp-tenants`` tenants, in two collections of ``--tp-docs`` documents each (everyone
else's documents make up the rest, including a writer whose username starts with the
person's). Service: ``POST`` to ``completed``, one ``soundops-deletion serve`` process
with its worker (resolution, the purge by ``from_username`` in ``_id``-range batches,
verification, receipt). Floor: a plain script on the same driver doing the same
equality-filter batched deletes (read up to a batch of ``_id`` values, ``delete_many``
up to the last of them), no verification. Then every other document is checked to be
still there.

    .venv/bin/python -m bench.third_party [--tp-docs 200000 --tp-written 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient

from app.db import upgrade
from bench.common import (
    ServiceProcess,
    cpu_snapshot,
    cpu_used,
    machine,
    previously,
    service_env,
)
from bench.large_purge import SCHEMA, Client, task_seconds
from testsupport.fake_graph import FakeGraph
from testsupport.harness.services import start_ferretdb, start_postgres

MONGO_DB = "soundops"
COLLECTIONS = ("instagram_messages", "instagram_comments")
FAN = "fan.of.everyone"
NEIGHBOUR = f"{FAN}_2"  # a username that starts with the fan's: must all stay
BATCH = 30_000  # the service's default DELETION_MONGODB_BATCH_SIZE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tp-docs", type=int, default=200_000, help="documents per collection (third party)"
    )
    parser.add_argument(
        "--tp-written", type=int, default=20_000, help="documents the person wrote, in all"
    )
    parser.add_argument("--tp-tenants", type=int, default=500, help="tenants they wrote to")


async def seed(db: Any, docs: int, written: int, tenants: int) -> dict[str, int]:
    """Per collection ``docs`` documents over ``tenants`` tenants, ``written // 2`` of them
    by FAN (every n-th, so spread over ``_id`` and tenants), one in 50 by NEIGHBOUR."""
    tenant_ids = [str(uuid.uuid4()) for _ in range(tenants)]
    now = datetime.now(UTC)
    mine = written // 2
    step = max(1, docs // max(1, mine))
    counts: dict[str, int] = {}
    for name in COLLECTIONS:
        fan = 0
        for start in range(0, docs, 10_000):
            batch = []
            for n in range(start, min(docs, start + 10_000)):
                by_fan = n % step == 0 and fan < mine
                fan += by_fan
                writer = FAN if by_fan else NEIGHBOUR if n % 50 == 1 else f"writer{n % 7919}"
                batch.append(
                    {
                        "_id": ObjectId(),
                        "tenant_id": tenant_ids[n % tenants],
                        "instagram_account_id": tenant_ids[n % tenants][::-1],
                        "ig_user_id": str(17_841_400_000_000_000 + n % tenants),
                        "from_username": writer,
                        "text": "a comment or message",
                        "created_at": now,
                    }
                )
            await db[name].insert_many(batch)
        counts[name] = fan
    return counts


async def written_back(db: Any, counts: dict[str, int], tenants: int) -> None:
    """The person's documents again (after the service deleted them), for the floor."""
    now = datetime.now(UTC)
    for name, count in counts.items():
        await db[name].insert_many(
            [
                {
                    "_id": ObjectId(),
                    "tenant_id": f"tenant-{n % tenants}",
                    "from_username": FAN,
                    "text": "again",
                    "created_at": now,
                }
                for n in range(count)
            ]
        )


async def floor(db: Any) -> float:
    """The same equality-filter batched deletes as the service, nothing else."""
    started = time.monotonic()
    selection = {"from_username": FAN}
    for name in COLLECTIONS:
        while True:
            batch = (
                await db[name]
                .find(selection, {"_id": 1}, sort=[("_id", 1)], limit=BATCH, batch_size=BATCH)
                .to_list()
            )
            if not batch:
                break
            await db[name].delete_many({**selection, "_id": {"$lte": batch[-1]["_id"]}})
            if len(batch) < BATCH:
                break
    return time.monotonic() - started


async def others(db: Any) -> dict[str, int]:
    return {
        name: await db[name].count_documents({"from_username": {"$ne": FAN}})
        for name in COLLECTIONS
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pg, ferret = start_postgres(), start_ferretdb()
    graph = FakeGraph().start()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferret.url)
    result: dict[str, Any] = {
        "date": machine()["date"],
        "docs": args.tp_docs,
        "written": args.tp_written,
        "tenants": args.tp_tenants,
        "backend": next(
            (a.split("=", 1)[1] for a in ferret.command() if a.startswith("--handler=")), "?"
        ),
    }
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
            absent_stores="s3",
            meta_graph_url=graph.facebook_url,
            instagram_graph_url=graph.instagram_url,
        )
        db = mongo[MONGO_DB]
        started = time.monotonic()
        counts = await seed(db, args.tp_docs, args.tp_written, args.tp_tenants)
        result["seed_seconds"] = round(time.monotonic() - started, 1)
        result["fan_documents"] = counts
        print(f"  seeded {2 * args.tp_docs:,} documents in {result['seed_seconds']} s", flush=True)
        before = await others(db)

        service = ServiceProcess(env, "third-party")
        client = Client(service.url)
        try:
            cpu_before = cpu_snapshot()
            started = time.monotonic()
            request_id = await client.create("meta_data", {"ig_username": FAN})
            body = await client.wait(request_id, interval=0.1)
            seconds = time.monotonic() - started
            cpu = cpu_used(cpu_before, cpu_snapshot())
        finally:
            await client.close()
            service.close()
        (mongo_task,) = [t for t in body["tasks"] if t["purger"] == "mongodb"]
        result["service"] = {
            "seconds": round(seconds, 2),
            "tasks": task_seconds(body),
            "deleted": mongo_task["deleted"],
            "cpu": cpu,
        }
        print(f"  service: {seconds:.1f} s {mongo_task['deleted']}", flush=True)
        result["service_left"] = sum(
            [await db[n].count_documents({"from_username": FAN}) for n in COLLECTIONS]
        )
        result["others_kept_after_service"] = await others(db) == before

        await written_back(db, counts, args.tp_tenants)
        cpu_before = cpu_snapshot()
        result["floor"] = {"seconds": round(await floor(db), 2)}
        result["floor"]["cpu"] = cpu_used(cpu_before, cpu_snapshot())
        print(f"  floor: {result['floor']['seconds']:.1f} s", flush=True)
        result["floor_left"] = sum(
            [await db[n].count_documents({"from_username": FAN}) for n in COLLECTIONS]
        )
        result["others_kept_after_floor"] = await others(db) == before
        floor_seconds = result["floor"]["seconds"]
        ratio = result["service"]["seconds"] / floor_seconds if floor_seconds else None
        result["ratio"] = round(ratio, 2) if ratio is not None else None
    finally:
        await mongo.close()
        graph.close()
        ferret.close()
        pg.close()
    return result


QUICK: dict[str, Any] = {"tp_docs": 10_000, "tp_written": 1_000, "tp_tenants": 50}


def render(result: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    service, floor_ = result["service"], result["floor"]
    ratio = service["seconds"] / floor_["seconds"] if floor_["seconds"] else float("inf")
    was = {
        "service": previously(previous, "service", "seconds", fmt="{:.2f}"),
        "floor": previously(previous, "floor", "seconds", fmt="{:.2f}"),
        "ratio": previously(previous, "ratio", fmt="{:.2f}x"),
        "when": previously(previous, "date"),
        "backend": previously(previous, "backend"),
    }
    written = sum(result["fan_documents"].values())
    kept = ["yes" if result[f"others_kept_after_{who}"] else "NO" for who in ("service", "floor")]
    third = {k: v for k, v in service["deleted"].items() if k.endswith(".as_third_party")}
    mongo_step = service["tasks"].get("mongodb", 0.0)
    return "\n".join(
        [
            "## Third-party deletion on large collections",
            "",
            f"Measured {result['date']}. A"
            " `meta_data` request by `ig_username` for a person with no connection on file"
            f" who wrote {written:,} documents (comments and messages) to"
            f" {result['tenants']:,} tenants, in two collections of {result['docs']:,}"
            f" documents each (FerretDB, {result['backend']} backend; everyone else's"
            f" documents, among them a username that starts with the person's, must stay)."
            " Service: `POST` to `completed`, one `soundops-deletion serve` process with its"
            " worker (resolution, the purge by `from_username` in `_id`-range batches of"
            " 30,000, verification, receipt). Floor: the same equality-filter batched deletes"
            " on the raw driver, no verification.",
            "",
            f"| | total (s) | before (s): {was['when']}, {was['backend']} backend"
            " | MongoDB step (s) | deleted |",
            "|---|---:|---:|---:|---|",
            f"| service | {service['seconds']:.2f} | {was['service']} | {mongo_step:.2f}"
            f" | `{json.dumps(third)}` |",
            f"| floor | {floor_['seconds']:.2f} | {was['floor']} | {floor_['seconds']:.2f}"
            f" | {written:,} |",
            f"| service / floor | **{ratio:.2f}x** | {was['ratio']}"
            f" | {mongo_step / floor_['seconds']:.2f}x | |",
            "",
            "CPU seconds on the whole machine during each run (every FerretDB process on the"
            " machine counts as FerretDB, other people's too), service / floor: FerretDB"
            f" {service['cpu'].get('FerretDB', 0)} / {floor_['cpu'].get('FerretDB', 0)}, other"
            f" work {service['cpu'].get('other', 0)} / {floor_['cpu'].get('other', 0)}. On a"
            " shared machine the two runs do not see the same load: read the ratio with that.",
            "",
            f"Left of the person's documents afterwards (service / floor):"
            f" {result['service_left']} / {result['floor_left']}. Everyone else's documents"
            f" unchanged after the service: {kept[0]}; after the floor: {kept[1]}."
            " Per collection the service does what the floor does (one `_id` read of the"
            " person's documents, one range `delete_many`) plus its verification (one"
            " `count_documents`, which FerretDB answers by fetching the matches); all three are"
            " one equality filter, which FerretDB's PostgreSQL backend pushes down to SQL and"
            " MongoDB serves from an index, while the SQLite backend scans the whole collection"
            " for each.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    result = asyncio.run(run(parser.parse_args()))
    print(render(result))


if __name__ == "__main__":
    main()
