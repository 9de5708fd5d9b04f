"""The durable queue itself: drain time of N requests with no-op purgers, 1-3 workers, and a
burst of Meta deauthorize callbacks.

Runs against a throwaway PostgreSQL 15 (the test harness starts it) or
``TEST_POSTGRES_URL``, on the same machine as the workers.

Drain: each round files ``--q-requests`` account requests into a fresh, migrated tracking
database, held back (``run_after`` unset) while ``--q-workers`` real ``soundops-deletion
worker`` processes start and go idle; then all of them are made due at once and the
clock runs until every one is completed, confirmed, minimised and released. The purgers
are the scripted ones with no log and no work (``DELETION_TESTING_PURGERS``), so what is
measured is claiming, leasing, resolution, four tasks' bookkeeping, settling, the events
and the completion step per request. CPU is read from ``/proc`` for the worker processes
("service") and for the backends of the bench's own PostgreSQL cluster ("postgres"),
from the moment the requests are due until the last is done: per request, in ms.

Burst: ``--q-burst`` people, each with one connected account in a SoundOps database,
remove the app: as many signed deauthorize callbacks are POSTed at once (up to
``--q-burst-connections`` in flight) to a ``soundops-deletion serve`` process in
production settings (no worker in it), while ``--q-burst-workers`` worker processes run
beside it. Acceptance rate = callbacks answered 200 / time to answer all; then the clock
runs until every resulting disconnect is completed, and everything is counted: every
callback recorded and expanded, one disconnect per account, each completed.

    .venv/bin/python -m bench.queue_throughput [--q-requests 2000] [--q-workers 1 2 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import structlog

from app.db import create_engine, create_sessionmaker, upgrade_sync
from app.models import RequestKind
from app.routers.requests import new_deletion
from app.schemas import CreateAccountDeletion
from app.services.intake.meta.signed_request import sign
from app.services.intake.rest import RequestService
from app.settings import Settings
from app.subjects import AccountSubject
from bench.common import BIN, HASH_KEY, JWT_SECRET, RECEIPT_KEY, ServiceProcess, previously
from bench.loadgen import RawConnection, own_cpu_seconds, raw_clients
from testsupport.cli import command, environment
from testsupport.harness.services import PostgresServer, start_postgres

SCHEMA = Path("tests/data/soundops_schema.sql")
META_SECRET = "bench-meta-app-secret-0123456789"
PUBLIC_BASE_URL = "https://deletion.bench.example"
TIMEOUT = 900.0

# Targets of issue #18 (2).
CPU_TARGET_MS = 10.0
SCALE_TARGETS = {2: 1.6, 3: 2.0}
BURST_TARGET = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--q-requests", type=int, default=2000, help="requests per drain round (queue)"
    )
    parser.add_argument(
        "--q-workers", type=int, nargs="+", default=[1, 2, 3], help="worker processes per round"
    )
    parser.add_argument(
        "--q-concurrency", type=int, default=4, help="DELETION_WORKER_CONCURRENCY per worker"
    )
    parser.add_argument("--q-burst", type=int, default=2000, help="deauthorize callbacks (0: none)")
    parser.add_argument(
        "--q-burst-workers", type=int, default=2, help="worker processes draining the burst"
    )
    parser.add_argument(
        "--q-burst-connections", type=int, default=64, help="callbacks in flight at once"
    )
    parser.add_argument(
        "--q-profile",
        type=Path,
        default=None,
        help="py-spy record the first worker of the first round into this file (raw format)",
    )
    parser.add_argument(
        "--q-burst-profile",
        type=Path,
        default=None,
        help="py-spy record the serve process during the burst into this file (raw format)",
    )


QUICK: dict[str, Any] = {"q_requests": 200, "q_workers": [1, 2], "q_burst": 200}


# --- processes and CPU ------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


class PostgresCpu:
    """CPU of the bench's own cluster: its postmaster and every backend, including the
    backends that come and go between two readings (their CPU is added when they exit,
    as their parent's ``cutime``, which this reads too)."""

    def __init__(self, server: PostgresServer) -> None:
        data_dir = getattr(server, "data_dir", None)
        self.postmaster: int | None = None
        if data_dir is not None:
            text = (Path(data_dir) / "postmaster.pid").read_text()
            self.postmaster = int(text.split()[0])

    def seconds(self) -> float | None:
        if self.postmaster is None:
            return None  # an external server (TEST_POSTGRES_URL): not measured
        try:
            stat = Path(f"/proc/{self.postmaster}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = os.sysconf("SC_CLK_TCK")
        own = sum(int(f) for f in fields[11:15]) / ticks  # utime, stime, cutime, cstime
        return own + sum(_cpu_seconds(pid) for pid in _children(self.postmaster))


def _worker_env(url: str, script: Path, concurrency: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELETION_")}
    env.update(
        DELETION_ENVIRONMENT="test",
        DELETION_DATABASE_URL=url,
        DELETION_TESTING_PURGERS=str(script),
        DELETION_HASH_KEY=HASH_KEY,
        DELETION_RECEIPT_SIGNING_KEY=RECEIPT_KEY,
        DELETION_JWT_SECRET=JWT_SECRET,
        DELETION_WORKER_POLL_SECONDS="0.2",
        DELETION_WORKER_CONCURRENCY=str(concurrency),
        DELETION_LOG_LEVEL="WARNING",
    )
    env.update({f"DELETION_{k.upper()}": v for k, v in extra.items()})
    return environment(env)


def _start_workers(count: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    processes = []
    for n in range(count):
        log = (logs / f"worker-{n}.log").open("wb")
        processes.append(
            subprocess.Popen(command("worker"), env=env, stdout=log, stderr=subprocess.STDOUT)
        )
    return processes


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _settled_cpu(processes: list[subprocess.Popen[bytes]], quiet: float = 0.3) -> None:
    """Wait until the workers have started and gone idle (their CPU stops growing)."""
    last, still = -1.0, 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited with {process.returncode}")
        now = sum(_cpu_seconds(p.pid) for p in processes)
        still = still + 1 if now - last < 0.02 * len(processes) else 0
        last = now
        if still * 0.25 >= quiet + 0.5:
            return


# --- drain rounds -----------------------------------------------------------------------


def _settings(url: str, **extra: Any) -> Settings:
    return Settings(
        environment="test",
        database_url=url,
        hash_key=HASH_KEY,
        jwt_secret=JWT_SECRET,
        receipt_signing_key=RECEIPT_KEY,
        **extra,
    )


async def file_requests(url: str, count: int, prefix: str) -> None:
    """``count`` account requests through the intake service, held back (not yet due)."""
    settings = _settings(url)
    engine = create_engine(url)
    service = RequestService(settings, create_sessionmaker(engine), settings.effective_hash_key)
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        body = CreateAccountDeletion(
            kind=RequestKind.account, subject=AccountSubject(site_name=f"{prefix}-{i}")
        )
        async with sem:
            await service.create(new_deletion(body, requested_by="bench"))

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await engine.dispose()


DONE_SQL = (
    "SELECT count(*) FROM deletion_requests WHERE status = 'completed'"
    " AND minimised_at IS NOT NULL AND lease_owner IS NULL"
)


async def _wait_done(conn: asyncpg.Connection, expected: int, where: str = "") -> float:
    started = time.monotonic()
    while int(await conn.fetchval(DONE_SQL + where)) < expected:
        if time.monotonic() - started > TIMEOUT:
            raise RuntimeError(f"not drained in {TIMEOUT:.0f} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def drain_round(
    server: PostgresServer,
    workers: int,
    requests: int,
    script: Path,
    concurrency: int,
    profile: Path | None,
) -> dict[str, Any]:
    name = f"bench_queue_{uuid.uuid4().hex[:8]}"
    server.create_database(name)
    url = server.url(name)
    pg_cpu = PostgresCpu(server)
    try:
        await asyncio.to_thread(upgrade_sync, url)
        await file_requests(url, requests, "bench")
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("UPDATE deletion_requests SET run_after = NULL")
            with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
                processes = _start_workers(
                    workers, _worker_env(url, script, concurrency), Path(tmp)
                )
                spy: subprocess.Popen[bytes] | None = None
                try:
                    await _settled_cpu(processes)
                    if profile is not None:
                        spy = _py_spy(processes[0].pid, profile)
                    cpu_before = [_cpu_seconds(p.pid) for p in processes]
                    pg_before = pg_cpu.seconds()
                    await conn.execute("UPDATE deletion_requests SET run_after = now()")
                    seconds = await _wait_done(conn, requests)
                    cpu = [
                        _cpu_seconds(p.pid) - b for p, b in zip(processes, cpu_before, strict=True)
                    ]
                    pg_after = pg_cpu.seconds()
                finally:
                    _stop(processes)
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(timeout=60)
            transactions = await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            )
            events = await conn.fetchval("SELECT count(*) FROM deletion_events")
        finally:
            await conn.close()
    finally:
        server.drop_database(name)
    service_ms = sum(cpu) / requests * 1000
    postgres_ms = (
        (pg_after - pg_before) / requests * 1000
        if pg_before is not None and pg_after is not None
        else None
    )
    return {
        "workers": workers,
        "requests": requests,
        "seconds": round(seconds, 2),
        "per_second": round(requests / seconds, 1),
        "service_cpu_ms": round(service_ms, 2),
        "worker_cpu_seconds": [round(c, 2) for c in cpu],
        "postgres_cpu_ms": round(postgres_ms, 2) if postgres_ms is not None else None,
        # Commits in the database over the whole round (filing included): a rough count.
        "commits_per_request": round(int(transactions) / requests, 1),
        "events_per_request": round(int(events) / requests, 1),
    }


def _py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(Path(BIN).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "-o",
            str(output),
            "-r",
            "200",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# --- the deauthorize burst --------------------------------------------------------------


async def _seed_accounts(url: str, count: int) -> list[str]:
    """One tenant with one connected (Facebook Login) account per person; their ids."""
    conn = await asyncpg.connect(url)
    try:
        users = [str(10_000_000_000_000 + n) for n in range(count)]
        tenants = [(uuid.uuid4(), f"burst-{n}", f"owner{n}@burst.example") for n in range(count)]
        await conn.executemany(
            "INSERT INTO tenants (id, site_name, owner_email) VALUES ($1, $2, $3)", tenants
        )
        await conn.executemany(
            "INSERT INTO instagram_accounts (id, tenant_id, login_family, ig_user_id,"
            " ig_username, facebook_user_id, connected_at)"
            " VALUES ($1, $2, 'facebook', $3, $4, $5, now() - interval '10 days')",
            [
                (uuid.uuid4(), t[0], str(17_841_400_000_000_000 + n), f"burst.{n}", users[n])
                for n, t in enumerate(tenants)
            ],
        )
        return users
    finally:
        await conn.close()


async def _post_all(url: str, users: list[str], connections: int) -> dict[str, Any]:
    """POST one signed deauthorize callback per user, ``connections`` at a time on as many
    keep-alive connections of the load generator's raw client (httpx spends ~8 ms of CPU
    a request with 64 connections: it, not the service, was the limit), each sent again
    after a connection error as Meta would."""
    now = int(time.time())
    bodies = [
        urlencode(
            {
                "signed_request": sign(
                    {"algorithm": "HMAC-SHA256", "user_id": u, "issued_at": now},
                    META_SECRET.encode(),
                )
            }
        ).encode()
        for u in users
    ]
    statuses: dict[str, int] = {}
    expanded = retried = 0
    pending = iter(bodies)
    clients = raw_clients(
        url, None, connections, "/meta/deauthorize", "application/x-www-form-urlencoded"
    )

    async def loop(client: RawConnection) -> None:
        nonlocal expanded, retried
        for body in pending:
            for attempt in range(3):
                status, content = await client.exchange(body)
                if status.isdigit():
                    break
                # A kept-alive connection the server closed meanwhile: Meta delivers
                # again too (a replay is answered the same).
                if attempt == 2:
                    raise RuntimeError(f"deauthorize callback failed: {status}")
                retried += 1
            statuses[status] = statuses.get(status, 0) + 1
            if status == "200" and json.loads(content).get("expanded"):
                expanded += 1

    started, cpu_before = time.monotonic(), own_cpu_seconds()
    try:
        await asyncio.gather(*(loop(c) for c in clients))
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    seconds = time.monotonic() - started
    client_cpu = own_cpu_seconds() - cpu_before
    return {
        "seconds": round(seconds, 2),
        "per_second": round(len(users) / seconds, 1),
        "statuses": dict(sorted(statuses.items())),
        "expanded_at_once": expanded,
        "retried": retried,
        "client_cpu_ms": round(client_cpu / len(users) * 1000, 2),
    }


async def burst(
    server: PostgresServer,
    count: int,
    workers: int,
    connections: int,
    script: Path,
    profile: Path | None = None,
) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    tracking, soundops = f"bench_burst_{suffix}", f"bench_soundops_{suffix}"
    server.create_database(tracking)
    server.create_database(soundops)
    pg_cpu = PostgresCpu(server)
    try:
        server.psql_file(soundops, SCHEMA)
        url, target = server.url(tracking), server.url(soundops)
        await asyncio.to_thread(upgrade_sync, url)
        users = await _seed_accounts(target, count)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DELETION_")}
        env.update(
            DELETION_ENVIRONMENT="production",
            DELETION_PUBLIC_BASE_URL=PUBLIC_BASE_URL,
            DELETION_DATABASE_URL=url,
            DELETION_TARGET_POSTGRES_URL=target,
            DELETION_ABSENT_STORES="mongodb,s3,meta_graph",
            DELETION_RUN_WORKER="false",
            DELETION_META_APP_SECRET=META_SECRET,
            DELETION_JWT_SECRET=JWT_SECRET,
            DELETION_HASH_KEY=HASH_KEY,
            DELETION_RECEIPT_SIGNING_KEY=RECEIPT_KEY,
        )
        with tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp:
            service = ServiceProcess(env, "burst")
            processes = _start_workers(
                workers,
                _worker_env(
                    url, script, 4, target_postgres_url=target, meta_app_secret=META_SECRET
                ),
                Path(tmp),
            )
            conn = await asyncpg.connect(url)
            try:
                await _settled_cpu([*processes, service.process])
                service_before = _cpu_seconds(service.process.pid)
                workers_before = [_cpu_seconds(p.pid) for p in processes]
                pg_before = pg_cpu.seconds()
                spy = _py_spy(service.process.pid, profile) if profile is not None else None
                started = time.monotonic()
                accepted = await _post_all(service.url, users, connections)
                serve_cpu = _cpu_seconds(service.process.pid) - service_before
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(timeout=60)
                await _wait_done(conn, count, " AND kind = 'instagram_disconnect'")
                seconds = time.monotonic() - started
                worker_cpu = sum(
                    _cpu_seconds(p.pid) - b for p, b in zip(processes, workers_before, strict=True)
                )
                pg_after = pg_cpu.seconds()
                counts = await conn.fetchrow(
                    "SELECT count(*) AS recorded,"
                    " count(*) FILTER (WHERE expanded_at IS NOT NULL) AS expanded,"
                    " coalesce(sum(disconnects), 0) AS disconnects"
                    " FROM meta_deauthorizations"
                )
                requests = await conn.fetchrow(
                    "SELECT count(*) AS filed,"
                    " count(*) FILTER (WHERE status = 'completed' AND minimised_at IS NOT NULL)"
                    " AS completed FROM deletion_requests WHERE kind = 'instagram_disconnect'"
                )
            finally:
                await conn.close()
                _stop(processes)
                service.close()
    finally:
        server.drop_database(tracking)
        server.drop_database(soundops)
    lost = count - int(requests["completed"])
    return {
        "callbacks": count,
        "workers": workers,
        "connections": connections,
        "accept": accepted,
        "serve_cpu_ms": round(serve_cpu / count * 1000, 2),
        "drain_seconds": round(seconds, 2),
        "worker_cpu_ms": round(worker_cpu / count * 1000, 2),
        "postgres_cpu_ms": (
            round((pg_after - pg_before) / count * 1000, 2)
            if pg_before is not None and pg_after is not None
            else None
        ),
        "recorded": int(counts["recorded"]),
        "expanded": int(counts["expanded"]),
        "disconnects": int(counts["disconnects"]),
        "filed": int(requests["filed"]),
        "completed": int(requests["completed"]),
        "lost": lost,
    }


# --- the part ---------------------------------------------------------------------------


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    rounds = {r["workers"]: r for r in result["rounds"]}
    out: dict[str, Any] = {}
    if rounds:
        worst = max(r["service_cpu_ms"] for r in rounds.values())
        out["cpu_per_request"] = {"ms": worst, "target": CPU_TARGET_MS, "met": worst <= 10.0}
    if 1 in rounds:
        for workers, target in SCALE_TARGETS.items():
            if workers in rounds:
                ratio = rounds[1]["seconds"] / rounds[workers]["seconds"]
                out[f"scale_{workers}"] = {
                    "ratio": round(ratio, 2),
                    "target": target,
                    "met": ratio >= target,
                }
    if result.get("burst"):
        b = result["burst"]
        out["burst"] = {
            "per_second": b["accept"]["per_second"],
            "target": BURST_TARGET,
            "lost": b["lost"],
            "met": b["accept"]["per_second"] >= BURST_TARGET
            and b["lost"] == 0
            and b["accept"]["statuses"] == {"200": b["callbacks"]},
        }
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # The filing's own log lines (one per request) are not the bench's output.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    external = os.environ.get("TEST_POSTGRES_URL")
    server = PostgresServer(external) if external else start_postgres()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "requests": args.q_requests,
        "concurrency": args.q_concurrency,
        "cores": os.cpu_count() or 1,
        "rounds": [],
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "noop.json"
            script.write_text(json.dumps({"log": None, "default": ["ok"]}))
            for index, workers in enumerate(w for w in args.q_workers if w > 0):
                figures = await drain_round(
                    server,
                    workers,
                    args.q_requests,
                    script,
                    args.q_concurrency,
                    args.q_profile if index == 0 else None,
                )
                result["rounds"].append(figures)
                print(
                    f"  {workers} worker(s): {args.q_requests} requests in"
                    f" {figures['seconds']:.2f} s ({figures['per_second']:.0f}/s),"
                    f" service {figures['service_cpu_ms']:.1f} ms CPU/request,"
                    f" postgres {figures['postgres_cpu_ms']} ms",
                    flush=True,
                )
            if args.q_burst:
                result["burst"] = await burst(
                    server,
                    args.q_burst,
                    args.q_burst_workers,
                    args.q_burst_connections,
                    script,
                    getattr(args, "q_burst_profile", None),
                )
                b = result["burst"]
                print(
                    f"  burst: {b['callbacks']} callbacks accepted at"
                    f" {b['accept']['per_second']:.0f}/s {b['accept']['statuses']},"
                    f" drained in {b['drain_seconds']:.1f} s, lost {b['lost']}",
                    flush=True,
                )
    finally:
        if not external:
            server.close()  # type: ignore[attr-defined]
    result["verdicts"] = verdicts(result)
    return result


def _met(verdict: dict[str, Any] | None) -> str:
    if verdict is None:
        return "not measured"
    return "met" if verdict["met"] else "MISSED"


def _ceiling_lines(result: dict[str, Any], one: dict[str, Any] | None) -> list[str]:
    """What more workers can reach on this machine at most, from the one-worker round: the
    cores one worker keeps busy (its own CPU and PostgreSQL's, per request, at its rate)
    against the cores there are. A worker that keeps more than cores/N busy caps N workers
    below N times one, however cheap a request gets."""
    if one is None or one.get("postgres_cpu_ms") is None:
        return []
    cores = result.get("cores") or os.cpu_count() or 1
    busy = one["per_second"] * (one["service_cpu_ms"] + one["postgres_cpu_ms"]) / 1000
    best = cores / busy if busy else math.inf
    targets = ", ".join(f"{workers} workers {target}x" for workers, target in SCALE_TARGETS.items())
    return [
        "",
        f"The most more workers can give on this machine: one worker kept {busy:.2f} cores"
        f" busy ({one['per_second']:.0f} requests/s x ({one['service_cpu_ms']:.1f} ms of its"
        f" own + {one['postgres_cpu_ms']:.1f} ms of PostgreSQL's CPU)), of {cores}; so any"
        f" number of workers drains at most {best:.2f}x one here (targets: {targets})."
        " While one worker is CPU-bound, a cheaper request raises its rate in step, so it"
        " keeps one core busy plus PostgreSQL's share: on 2 cores the ceiling stays under"
        " 2x whatever a request costs; only more cores, or PostgreSQL on another machine,"
        " lift it.",
    ]


def render(result: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    was_rounds = {r["workers"]: r for r in (previous or {}).get("rounds", [])}
    one = next((r for r in result["rounds"] if r["workers"] == 1), None)
    was_one = was_rounds.get(1)
    lines = [
        "## The durable queue: drain time, CPU per request, scale-out, a deauthorize burst",
        "",
        f"Measured {result['date']}. {result['requests']:,} account requests, made due at"
        " once, drained by real `soundops-deletion worker` processes"
        f" (`DELETION_WORKER_CONCURRENCY={result['concurrency']}` each) with no-op scripted"
        " purgers, PostgreSQL 15 on the same 2-core machine; the clock stops when the last"
        " is completed, minimised and released. CPU from `/proc`: the worker processes"
        ' ("service") and the backends of the bench\'s own cluster ("postgres"), per'
        " request. Before: " + previously(previous, "date") + ".",
        "",
        "| workers | drain (s) | before | requests/s | x one worker | before"
        " | service ms CPU/request | before | postgres ms CPU/request | before"
        " | commits/request | events/request |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rounds"]:
        w = r["workers"]
        was = was_rounds.get(w)
        ratio = one["seconds"] / r["seconds"] if one else None
        was_ratio = (
            was_one["seconds"] / was["seconds"]
            if was_one and was and was.get("requests") == was_one.get("requests")
            else None
        )
        lines.append(
            f"| {w} | {r['seconds']:.1f} | {previously(was, 'seconds', fmt='{:.1f}')}"
            f" | {r['per_second']:.0f}"
            f" | {f'{ratio:.2f}x' if ratio else '-'}"
            f" | {f'{was_ratio:.2f}x' if was_ratio else '-'}"
            f" | {r['service_cpu_ms']:.1f} | {previously(was, 'service_cpu_ms', fmt='{:.1f}')}"
            f" | {previously(r, 'postgres_cpu_ms', fmt='{:.1f}')}"
            f" | {previously(was, 'postgres_cpu_ms', fmt='{:.1f}')}"
            f" | {r['commits_per_request']} | {r['events_per_request']} |"
        )
    v = result.get("verdicts", {})
    lines += [""]
    cpu = v.get("cpu_per_request")
    if cpu:
        lines.append(
            f"- Service CPU per request <= {CPU_TARGET_MS:g} ms: {_met(cpu)} ({cpu['ms']:.1f} ms)."
        )
    for workers, target in SCALE_TARGETS.items():
        s = v.get(f"scale_{workers}")
        if s:
            lines.append(
                f"- {workers} workers >= {target}x one: {_met(s)} ({s['ratio']:.2f}x;"
                f" before {previously(previous, 'verdicts', f'scale_{workers}', 'ratio')}x)."
            )
    lines += _ceiling_lines(result, one)
    b = result.get("burst")
    if b:
        lines += [
            "",
            f"Burst: {b['callbacks']:,} people remove the app at once: as many signed"
            " deauthorize callbacks (Facebook Login) POSTed with up to"
            f" {b['connections']} in flight (the load generator's raw keep-alive client;"
            " runs before 2026-12-02 08:40 UTC used httpx, whose 8 ms of CPU a callback was"
            " what limited them) to `soundops-deletion serve` in production settings (no"
            " worker in it; each callback recorded in one statement and answered, at most 4"
            " at a time expanded at once by an indexed query of the SoundOps database into"
            f" one disconnect, the others by the workers), while {b['workers']} worker"
            " processes drain what it files.",
            "",
            "| | now | before |",
            "|---|---:|---:|",
            f"| accepted per second | {b['accept']['per_second']:.0f}"
            f" | {previously(previous, 'burst', 'accept', 'per_second', fmt='{:.0f}')} |",
            f"| answers (sent again after a connection error) | {b['accept']['statuses']}"
            f" ({b['accept'].get('retried', 0)})"
            f" | {previously(previous, 'burst', 'accept', 'statuses')} |",
            f"| expanded while answering | {b['accept']['expanded_at_once']:,}"
            f" | {previously(previous, 'burst', 'accept', 'expanded_at_once')} |",
            f"| load generator ms CPU/callback | {previously(b, 'accept', 'client_cpu_ms')}"
            f" | {previously(previous, 'burst', 'accept', 'client_cpu_ms')} |",
            f"| serve ms CPU/callback | {b['serve_cpu_ms']:.1f}"
            f" | {previously(previous, 'burst', 'serve_cpu_ms', fmt='{:.1f}')} |",
            f"| first callback to last disconnect completed (s) | {b['drain_seconds']:.1f}"
            f" | {previously(previous, 'burst', 'drain_seconds', fmt='{:.1f}')} |",
            f"| worker ms CPU/disconnect | {b['worker_cpu_ms']:.1f}"
            f" | {previously(previous, 'burst', 'worker_cpu_ms', fmt='{:.1f}')} |",
            f"| postgres ms CPU/callback | {previously(b, 'postgres_cpu_ms', fmt='{:.1f}')}"
            f" | {previously(previous, 'burst', 'postgres_cpu_ms', fmt='{:.1f}')} |",
            f"| recorded / expanded / disconnects filed / completed | {b['recorded']:,} /"
            f" {b['expanded']:,} / {b['filed']:,} / {b['completed']:,} |"
            f" {previously(previous, 'burst', 'completed')} completed |",
            f"| lost | {b['lost']} | {previously(previous, 'burst', 'lost')} |",
            "",
            f"- Burst accepted at >= {BURST_TARGET:g}/s and drained without one lost:"
            f" {_met(v.get('burst'))}.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--previous", type=Path, help="a result to show beside this one")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    previous = json.loads(args.previous.read_text()) if args.previous else None
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(render(result, previous))


if __name__ == "__main__":
    main()
