"""Throughput of the durable queue itself: requests/s drained with no-op purgers, 1 vs 3 workers.

Runs against a throwaway PostgreSQL 15 (the test harness starts it) or
``TEST_POSTGRES_URL``. Each round files N account requests into a fresh,
migrated tracking database and times real ``soundops-deletion worker``
processes until every request is ``completed``. The purgers are the scripted
ones with no log and no work, so what is measured is claiming, leasing,
bookkeeping of four tasks and the completion per request.

    .venv/bin/python -m bench.queue_throughput [--requests 600] [--workers 1 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from app.db import create_engine, create_sessionmaker, upgrade_sync
from app.models import DeletionRequest, RequestKind
from app.routers.requests import new_deletion
from app.schemas import CreateAccountDeletion
from app.services.intake.rest import RequestService
from app.settings import Settings
from app.subjects import AccountSubject
from testsupport.cli import command, environment
from testsupport.harness.services import PostgresServer, start_postgres

BENCH_RECEIPT_KEY = "YmVuY2gtcmVjZWlwdC1zaWduaW5nLWtleS0zMmJ5dGU="


async def file_requests(url: str, count: int) -> None:
    settings = Settings(
        environment="test",
        database_url=url,
        hash_key="bench-hash-key-0123456789",
        jwt_secret="bench-jwt-secret-0123456789abcdef",
        receipt_signing_key=BENCH_RECEIPT_KEY,
    )
    engine = create_engine(url)
    service = RequestService(settings, create_sessionmaker(engine), settings.effective_hash_key)
    try:
        for i in range(count):
            body = CreateAccountDeletion(
                kind=RequestKind.account, subject=AccountSubject(site_name=f"bench-{i}")
            )
            await service.create(new_deletion(body, requested_by="bench"))
    finally:
        await engine.dispose()


async def completed(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            query = sa.select(sa.func.count()).where(DeletionRequest.status == "completed")
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


def run_round(
    server: PostgresServer, workers: int, requests: int, script: Path, concurrency: int
) -> float:
    name = f"bench_queue_{uuid.uuid4().hex[:8]}"
    server.create_database(name)
    url = server.url(name)
    try:
        upgrade_sync(url)
        asyncio.run(file_requests(url, requests))
        env = {k: v for k, v in os.environ.items() if not k.startswith("DELETION_")}
        env.update(
            DELETION_ENVIRONMENT="test",
            DELETION_DATABASE_URL=url,
            DELETION_TESTING_PURGERS=str(script),
            DELETION_HASH_KEY="bench-hash-key-0123456789",
            DELETION_RECEIPT_SIGNING_KEY=BENCH_RECEIPT_KEY,
            DELETION_JWT_SECRET="bench-jwt-secret-0123456789abcdef",
            DELETION_WORKER_POLL_SECONDS="0.05",
            DELETION_WORKER_CONCURRENCY=str(concurrency),
        )
        started = time.monotonic()
        processes = [
            subprocess.Popen(
                command("worker"),
                env=environment(env),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        try:
            while asyncio.run(completed(url)) < requests:
                if time.monotonic() - started > 600:
                    raise RuntimeError("round did not finish in 10 minutes")
                time.sleep(0.05)
            elapsed = time.monotonic() - started
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=30)
        return elapsed
    finally:
        server.drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--concurrency", type=int, default=4, help="requests at once per worker")
    args = parser.parse_args()
    external = os.environ.get("TEST_POSTGRES_URL")
    server = PostgresServer(external) if external else start_postgres()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "noop.json"
        script.write_text(json.dumps({"log": None, "default": ["ok"]}))
        results = {}
        for workers in args.workers:
            seconds = run_round(server, workers, args.requests, script, args.concurrency)
            results[workers] = args.requests / seconds
            print(
                f"{workers} worker(s): {args.requests} requests in {seconds:.2f} s "
                f"= {results[workers]:.0f} requests/s"
            )
        if 1 in results:
            for workers, rate in results.items():
                print(f"  {workers} worker(s): {rate / results[1]:.2f}x one worker")
    if not external:
        server.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
