"""FerretDB's two backends side by side: a small tenant's documents among many others'.

The tests and the other benchmarks run FerretDB on its PostgreSQL backend, in a cluster
of its own (shared/spec/test-services.md); this measures why. One collection holds
``--backend-docs`` messages, ``--backend-small`` of them one small tenant's (spread
through the whole ``_id`` range), the rest one large tenant's. On each backend, with the
same data, it times what a short request does to that small tenant: count and read its
documents by plain equality (the filters the MongoDB purger writes), the same match
written as ``$in`` of one value (not pushed down to SQL), and the delete of the tenant's
documents. Each read is the median of ``--repeats`` runs; ``$in`` and the delete run once.

    .venv/bin/python -m bench.ferret_backends [--backend-docs 160000 --backend-small 526]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench.common import previously
from testsupport.harness.services import FERRETDB_BACKENDS, start_ferretdb

Document = dict[str, Any]
SMALL, LARGE = "tenant-small", "tenant-large"
SMALL_ACCOUNT, LARGE_ACCOUNT = "ig-account-small", "ig-account-large"
INSERT_BATCH = 5_000
# From shared/spec/test-services.md (this machine, earlier): 160,000 documents, 526 matching.
REFERENCE = {
    "equality": {"postgresql": "0.09 s"},
    "in_one": {"postgresql": "5.3 s"},
}
LABELS = {
    "count": '`count_documents({"tenant_id": t})`',
    "equality": '`find({"instagram_account_id": a}, {"_id": 1})`',
    "in_one": '`find({"instagram_account_id": {"$in": [a]}})` (one value)',
    "delete": '`delete_many({"tenant_id": t})`',
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend-docs", type=int, default=160_000, help="documents in all")
    parser.add_argument("--backend-small", type=int, default=526, help="the small tenant's")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each read (median)")


def documents(total: int, small: int) -> list[Document]:
    """``total`` messages in ``_id`` order, every (total // small)-th one the small tenant's."""
    step = max(1, total // small)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    docs: list[Document] = []
    for n in range(total):
        mine = n % step == step - 1 and n // step < small
        docs.append(
            {
                "_id": n,
                "tenant_id": SMALL if mine else LARGE,
                "instagram_account_id": SMALL_ACCOUNT if mine else LARGE_ACCOUNT,
                "ig_user_id": "17841400000000001" if mine else "17841400000000002",
                "text": f"message {n}",
                "created_at": start + timedelta(seconds=n),
            }
        )
    return docs


async def _timed(work: Callable[[], Awaitable[object]]) -> tuple[float, object]:
    started = time.perf_counter()
    value = await work()
    return time.perf_counter() - started, value


async def measure(backend: str, docs: list[Document], repeats: int) -> dict[str, Any]:
    """Seed ``docs`` into a fresh FerretDB on ``backend`` and time the operations."""
    expected = sum(d["tenant_id"] == SMALL for d in docs)
    server = start_ferretdb(backend=backend)
    client: AsyncMongoClient[Document] = AsyncMongoClient(server.url)
    try:
        messages = client["bench"]["instagram_messages"]
        await messages.create_index("tenant_id")
        await messages.create_index("instagram_account_id")
        started = time.perf_counter()
        for i in range(0, len(docs), INSERT_BATCH):
            await messages.insert_many(docs[i : i + INSERT_BATCH], ordered=False)
        seconds: dict[str, float] = {"insert": time.perf_counter() - started}

        async def count() -> int:
            return await messages.count_documents({"tenant_id": SMALL})

        async def equality() -> int:
            found = messages.find({"instagram_account_id": SMALL_ACCOUNT}, {"_id": 1})
            return len(await found.to_list())

        async def in_one() -> int:
            found = messages.find({"instagram_account_id": {"$in": [SMALL_ACCOUNT]}}, {"_id": 1})
            return len(await found.to_list())

        for name, work, runs in (("count", count, repeats), ("equality", equality, repeats)):
            samples = []
            for _ in range(runs):
                took, value = await _timed(work)
                if value != expected:
                    raise AssertionError(f"{backend} {name}: {value} documents, not {expected}")
                samples.append(took)
            seconds[name] = statistics.median(samples)
        took, value = await _timed(in_one)
        if value != expected:
            raise AssertionError(f"{backend} $in: {value} documents, not {expected}")
        seconds["in_one"] = took
        took, result = await _timed(lambda: messages.delete_many({"tenant_id": SMALL}))
        deleted = getattr(result, "deleted_count", None)
        if deleted != expected or await messages.count_documents({}) != len(docs) - expected:
            raise AssertionError(f"{backend} delete: {deleted} deleted, not {expected}")
        seconds["delete"] = took
        return {"seconds": {k: round(v, 3) for k, v in seconds.items()}}
    finally:
        await client.close()
        server.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    docs = documents(args.backend_docs, args.backend_small)
    result: dict[str, Any] = {
        "docs": len(docs),
        "small": sum(d["tenant_id"] == SMALL for d in docs),
        "repeats": args.repeats,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": round(os.getloadavg()[0], 2),
    }
    for backend in FERRETDB_BACKENDS:
        print(f"   FerretDB on {backend}", flush=True)
        result[backend] = await measure(backend, docs, args.repeats)
    result["load_after"] = round(os.getloadavg()[0], 2)
    return result


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


QUICK: dict[str, Any] = {"backend_docs": 20_000, "backend_small": 100, "repeats": 3}


def render(result: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    sqlite, pg = result["sqlite"]["seconds"], result["postgresql"]["seconds"]
    rows = [
        "| operation | SQLite backend (s) | PostgreSQL backend (s) | SQLite / PostgreSQL"
        f" | PostgreSQL before ({previously(previous, 'date')}) | PostgreSQL, test-services.md |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in LABELS.items():
        ratio = sqlite[key] / pg[key] if pg[key] else float("inf")
        reference = REFERENCE.get(key, {}).get("postgresql", "-")
        rows.append(
            f"| {label} | {_seconds(sqlite[key])} | {_seconds(pg[key])}"
            f" | {ratio:.{0 if ratio >= 10 else 1}f}x"
            f" | {previously(previous, 'postgresql', 'seconds', key, fmt='{:.3f}')} | {reference} |"
        )
    return "\n".join(
        [
            "## FerretDB backends: a small tenant among many documents",
            "",
            f"One collection of {result['docs']:,} messages, {result['small']:,} of them a small"
            " tenant's spread through the whole `_id` range, with indexes on `tenant_id` and"
            " `instagram_account_id`; the same data on each backend of FerretDB 1.24.2 (the"
            " PostgreSQL one in a cluster of its own, as the tests run it). Reads: median of"
            f" {result['repeats']} runs; `$in` and the delete: one run. {result['date']}, load"
            f" average {result['load_before']} before and {result['load_after']} after (2"
            " cores shared with other work; the PostgreSQL backend is measured first, the"
            " SQLite one after it): `python -m bench.ferret_backends`.",
            "",
            *rows,
            "",
            f"Seeding ({INSERT_BATCH:,}-document `insert_many`): {sqlite['insert']:.1f} s on"
            f" SQLite, {pg['insert']:.1f} s on PostgreSQL. On SQLite every filter scans the"
            " whole collection in Go, so a short request waits behind everyone else's data;"
            " on PostgreSQL an equality filter is pushed down to SQL, but `$in` (and `$or`)"
            " are not: written that way the same match scans too. This is why the tests and"
            " the other benchmarks run on the PostgreSQL backend, and why the MongoDB purger"
            " writes one plain equality per value.",
        ]
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
