"""Intake throughput: POST /v1/deletion-requests on the service against the thinnest floor.

Starts a throwaway PostgreSQL 15 (or uses ``TEST_POSTGRES_URL``) and migrates two fresh
tracking databases: one for the real service (``soundops-deletion serve``, production
settings, no worker, no target store), one for the floor (``bench/floor_app.py``: FastAPI,
PyJWT verifying the bearer token on every request, one raw asyncpg INSERT into the same
``deletion_requests`` table, no ORM: the thinnest correct endpoint on the same stack),
one uvicorn process each. At each concurrency level a load generator in its own process
(``bench/loadgen.py``) drives the service and then the floor (the order alternates
between levels) with distinct subjects on keep-alive connections. Every answer must be
202, and afterwards each database must hold exactly the rows its server accepted. The
load generator's own ceiling (against a trivial server, ``loadgen --serve-trivial``) is
measured at the highest level, so that the reader knows the client is not the limit.

    .venv/bin/python -m bench.intake [--intake-seconds 10] [--intake-warmup 2]
        [--intake-levels 1 8 32 64] [--intake-client raw|httpx] [--profile] [--json F]

``--profile`` runs the highest level once more with py-spy sampling the service (the
``bench`` extra) and lists where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from app.auth import Scope, mint_token
from app.db import upgrade_sync
from app.settings import Settings
from bench.common import previously
from bench.loadgen import percentile
from testsupport.harness.services import (
    PostgresServer,
    free_port,
    http_responds,
    log_tail,
    start_postgres,
    to_asyncpg_url,
    to_plain_url,
)

PYTHON = sys.executable
BIN = Path(PYTHON).parent / "soundops-deletion"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef"
HASH_KEY = "bench-hash-key-0123456789"
RECEIPT_KEY = "YmVuY2gtcmVjZWlwdC1zaWduaW5nLWtleS0zMmJ5dGU="  # base64 of 32 bytes
PUBLIC_BASE_URL = "https://deletion.bench.invalid"

# Issue 18, target 1: ratios to the floor at these connection counts, p99 at the highest.
TARGET_RATIOS = {1: 0.70, 64: 0.60}
TARGET_P99_MS = 150.0
TARGET_P99_AT = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--intake-seconds", type=float, default=10.0, help="measured seconds per level and server"
    )
    parser.add_argument(
        "--intake-warmup", type=float, default=2.0, help="warm-up seconds before each run"
    )
    parser.add_argument(
        "--intake-levels",
        type=int,
        nargs="+",
        default=[1, 8, 32, 64],
        help="concurrent connections",
    )
    parser.add_argument(
        "--intake-rounds",
        type=int,
        default=3,
        help="rounds per level: service and floor alternate this many times, each measured "
        "for seconds/rounds, so that a change in the machine's other load falls on both",
    )
    parser.add_argument(
        "--intake-client",
        choices=["raw", "httpx"],
        default="raw",
        help="load generator's HTTP client (httpx costs ~1 ms of CPU a request)",
    )
    parser.add_argument(
        "--intake-environment",
        choices=["production", "development"],
        default="production",
        help="the service's DELETION_ENVIRONMENT (production is what is deployed)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the measured runs, sample the service with py-spy at the highest level "
        "and add where its time goes (pip install py-spy)",
    )


QUICK: dict[str, Any] = {
    "intake_seconds": 3.0,
    "intake_warmup": 1.0,
    "intake_levels": [1, 64],
    "intake_rounds": 1,
}


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path


def _clean_env() -> dict[str, str]:
    # Nothing of the caller's service configuration, AWS credentials or proxies leaks in.
    drop = ("DELETION_", "AWS_", "FLOOR_")
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    return {
        k: v for k, v in os.environ.items() if not k.startswith(drop) and k.lower() not in proxies
    }


def _start_server(
    name: str, command: list[str], env: dict[str, str], port: int, logs: Path, health: str
) -> Server:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not http_responds(f"{url}{health}"):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_server(Server(name, process, url, log))
            raise RuntimeError(f"{name} did not start:\n{log_tail(log)}")
        time.sleep(0.1)
    return Server(name, process, url, log)


def _stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


async def _load(
    server: Server, token: str, concurrency: int, args: argparse.Namespace, ours: list[int]
) -> Any:
    command = [
        PYTHON,
        "-m",
        "bench.loadgen",
        "--url",
        server.url,
        "--token",
        token,
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(args.intake_seconds),
        "--warmup",
        str(args.intake_warmup),
        "--pid",
        str(server.process.pid),
        "--client",
        args.intake_client,
        "--latencies",
        "--ours",
        *map(str, ours),
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        env=_clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed on {server.name}: {err.decode()[-2000:]}")
    if server.process.poll() is not None:
        raise RuntimeError(f"{server.name} exited during the run:\n{log_tail(server.log)}")
    return json.loads(out)


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def _command(args: argparse.Namespace) -> str:
    parts = [".venv/bin/python", "-m", "bench.intake"]
    parts += ["--intake-seconds", f"{args.intake_seconds:g}"]
    parts += ["--intake-warmup", f"{args.intake_warmup:g}"]
    parts += ["--intake-levels", *map(str, args.intake_levels)]
    parts += ["--intake-rounds", str(args.intake_rounds)]
    if args.intake_environment != "production":
        parts += ["--intake-environment", args.intake_environment]
    if args.intake_client != "raw":
        parts += ["--intake-client", args.intake_client]
    if args.profile:
        parts.append("--profile")
    return shlex.join(parts)


async def _stored(url: str) -> int:
    connection = await asyncpg.connect(to_plain_url(url))
    try:
        return int(await connection.fetchval("SELECT count(*) FROM deletion_requests"))
    finally:
        await connection.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    external = os.environ.get("TEST_POSTGRES_URL")
    pg = PostgresServer(external) if external else start_postgres()
    suffix = uuid.uuid4().hex[:8]
    service_db, floor_db = f"bench_intake_service_{suffix}", f"bench_intake_floor_{suffix}"
    servers: list[Server] = []
    accepted: Counter[str] = Counter()
    stored: dict[str, int] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
            logs = Path(tmp)
            urls = {}
            for name, db in (("service", service_db), ("floor", floor_db)):
                pg.create_database(db)
                urls[name] = to_asyncpg_url(pg.url(db))
                await asyncio.to_thread(upgrade_sync, urls[name])

            env = _clean_env()
            env.update(
                DELETION_ENVIRONMENT=args.intake_environment,
                DELETION_PUBLIC_BASE_URL=PUBLIC_BASE_URL,
                # Intake only: no store is reached, and production insists on saying so.
                DELETION_ABSENT_STORES="postgres,mongodb,s3,meta_graph",
                DELETION_DATABASE_URL=urls["service"],
                DELETION_RUN_WORKER="false",
                DELETION_JWT_SECRET=JWT_SECRET,
                DELETION_HASH_KEY=HASH_KEY,
                DELETION_RECEIPT_SIGNING_KEY=RECEIPT_KEY,
            )
            port = free_port()
            service = _start_server(
                "service", [str(BIN), "serve", "--port", str(port)], env, port, logs, "/healthz"
            )
            servers.append(service)
            floor_env = _clean_env()
            floor_env.update(FLOOR_DATABASE_URL=urls["floor"], FLOOR_JWT_SECRET=JWT_SECRET)
            port = free_port()
            floor = _start_server(
                "floor",
                [PYTHON, "-m", "bench.floor_app", "--port", str(port)],
                floor_env,
                port,
                logs,
                "/healthz",
            )
            servers.append(floor)
            port = free_port()
            trivial = _start_server(
                "trivial",
                [PYTHON, "-m", "bench.loadgen", "--serve-trivial", str(port)],
                _clean_env(),
                port,
                logs,
                "/",
            )
            servers.append(trivial)

            settings = Settings(
                environment="production",
                database_url=urls["service"],
                public_base_url=PUBLIC_BASE_URL,
                jwt_secret=JWT_SECRET,
                hash_key=HASH_KEY,
                receipt_signing_key=RECEIPT_KEY,
            )
            token = mint_token(
                settings, subject="bench-intake", scopes=[Scope.write.value], ttl=timedelta(hours=2)
            )

            # CPU of these process trees is this benchmark's; the rest is other load.
            ours = [os.getpid(), *_postmaster(pg)]
            top = max(args.intake_levels)
            ceiling = await _load(trivial, token, top, args, ours)
            _stop_server(trivial)
            levels: list[dict[str, Any]] = []
            rounds = max(1, args.intake_rounds)
            per_round = argparse.Namespace(
                **{**vars(args), "intake_seconds": args.intake_seconds / rounds}
            )
            for index, concurrency in enumerate(args.intake_levels):
                runs: dict[str, list[dict[str, Any]]] = {"service": [], "floor": []}
                for number in range(rounds):
                    flip = (index + number) % 2
                    for server in [floor, service] if flip else [service, floor]:
                        figures = await _load(server, token, concurrency, per_round, ours)
                        runs[server.name].append(figures)
                        accepted[server.name] += figures["accepted"]
                service_figures, floor_figures = combine(runs["service"]), combine(runs["floor"])
                floor_rate = floor_figures["requests_per_second"]
                levels.append(
                    {
                        "concurrency": concurrency,
                        "service": service_figures,
                        "floor": floor_figures,
                        "ratio": (
                            service_figures["requests_per_second"] / floor_rate
                            if floor_rate
                            else math.nan
                        ),
                        "round_ratios": [
                            s["requests_per_second"] / f["requests_per_second"]
                            if f["requests_per_second"]
                            else math.nan
                            for s, f in zip(runs["service"], runs["floor"], strict=True)
                        ],
                    }
                )
            profile = floor_profile = None
            if args.profile:
                profile = await _profile(service, token, top, args, ours, logs)
                accepted["service"] += profile.pop("accepted", 0)
                floor_profile = await _profile(floor, token, top, args, ours, logs)
                accepted["floor"] += floor_profile.pop("accepted", 0)
            for name in ("service", "floor"):
                stored[name] = await _stored(urls[name])
    finally:
        for server in servers:
            _stop_server(server)
        for name in (service_db, floor_db):
            try:
                pg.drop_database(name)
            except Exception as exc:
                print(f"could not drop {name}: {exc}", file=sys.stderr)
        if not external:
            pg.close()
    return {
        "machine": _machine(),
        "command": _command(args),
        "seconds": args.intake_seconds,
        "rounds": max(1, args.intake_rounds),
        "warmup": args.intake_warmup,
        "client": args.intake_client,
        "environment": args.intake_environment,
        "floor": "FastAPI + PyJWT + one raw asyncpg INSERT",
        # Since 2026-12-03 the floor's pool sends no reset query on release (floor_app).
        "floor_pool_reset": False,
        "targets": {
            "ratios": {str(k): v for k, v in TARGET_RATIOS.items()},
            "p99_ms": TARGET_P99_MS,
            "p99_at": TARGET_P99_AT,
        },
        "loadgen_ceiling": {
            "concurrency": ceiling["concurrency"],
            "requests_per_second": ceiling["requests_per_second"],
            "loadgen_cores": ceiling["loadgen_cores"],
            "p99_ms": ceiling["p99_ms"],
        },
        "levels": levels,
        "accepted": dict(accepted),
        "stored": stored,
        "verdict": _verdict(levels, dict(accepted), stored),
        "profile": profile,
        "floor_profile": floor_profile,
    }


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's figures at one level from its rounds, pooled: rate = all requests / all
    measured time, CPU per request over all requests, percentiles of all latencies."""
    if len(runs) == 1:
        runs[0].pop("latencies_ms", None)
        return runs[0]
    seconds = sum(run["seconds"] for run in runs)
    requests = sum(run["requests"] for run in runs)
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run["errors"])

    latencies = sorted(value for run in runs for value in run.pop("latencies_ms", []))

    def weighted(key: str) -> float:
        return float(sum(run.get(key, math.nan) * run["seconds"] for run in runs)) / seconds

    combined: dict[str, Any] = {
        **runs[0],
        "seconds": round(seconds, 3),
        "requests": requests,
        "answers_total": sum(run["answers_total"] for run in runs),
        "accepted": sum(run["accepted"] for run in runs),
        "errors": dict(errors),
        "requests_per_second": requests / seconds if seconds else 0.0,
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else math.nan,
        "rounds": len(runs),
    }
    for key in ("loadgen_cores", "machine_busy_fraction", "server_cores", "ours_cores",
                "foreign_cores"):  # fmt: skip
        if key in runs[0]:
            combined[key] = weighted(key)
    if "server_cpu_ms_per_request" in runs[0] and requests:
        combined["server_cpu_ms_per_request"] = (
            sum(run["server_cpu_ms_per_request"] * run["requests"] for run in runs) / requests
        )
    return combined


def _postmaster(pg: PostgresServer) -> list[int]:
    """The local server's postmaster (its backends are children of it), when there is one."""
    data_dir = getattr(pg, "data_dir", None)
    try:
        return [int((Path(data_dir) / "postmaster.pid").read_text().split()[0])] if data_dir else []
    except (OSError, ValueError, IndexError):
        return []


# Frames of the service's stacks that say where an intake request's time goes.
PROFILE_FRAMES = {
    "RequestResponseCycle.run_asgi": "whole request (uvicorn on)",
    "HttpMetricsMiddleware.__call__": "middleware (metrics, correlation id, guard) and all inside",
    "RequestGuardMiddleware._json_errors": "  body check of the guard (JSON decoded once more)",
    "solve_dependencies": "dependencies: body validation, bearer JWT, scope",
    "PyJWT.decode": "  of which JWT verification",
    "RequestService.create": "intake service (`RequestService.create`)",
    "insert_new_request": "  of which storing (`repository.insert_new_request`)",
    "AsyncEngine.connect": "    pool checkout",
    "_ping_stale": "    ping of a connection idle > 1 s",
    "AsyncConnection.scalar": "    the one statement (hold check and four tables)",
    "AsyncSession.commit": "  COMMIT",
    "request_out": "response model (`presenters.request_out`)",
    "serialize_response": "response validation and JSON",
    "RequestResponseCycle.send": "writing the response to the socket",
    "Logger.info": "uvicorn's access log",
    "_make_filtering_bound_logger.<locals>.make_method.<locals>.meth": "`request_created` log line",
}
TOP_FRAMES = 12
PROFILE_COPY = Path("bench/results/intake-service.pyspy.txt")


async def _profile(
    server: Server,
    token: str,
    concurrency: int,
    args: argparse.Namespace,
    ours: list[int],
    logs: Path,
) -> dict[str, Any]:
    """Sample a server with py-spy during one more run (not a measured one)."""
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(py_spy).exists():
        return {"error": "py-spy is not installed (pip install py-spy)"}
    raw = logs / f"{server.name}.pyspy"
    duration = max(2, int(args.intake_seconds))
    load = asyncio.create_task(_load(server, token, concurrency, args, ours))
    await asyncio.sleep(args.intake_warmup)
    spy = await asyncio.create_subprocess_exec(
        py_spy, "record", "--pid", str(server.process.pid), "--duration", str(duration),
        "--rate", "200", "--format", "raw", "--output", str(raw),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await spy.communicate()
    figures = await load
    if spy.returncode != 0 or not raw.exists():
        return {
            "error": f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}",
            "accepted": figures["accepted"],
        }
    copy = PROFILE_COPY.with_name(f"intake-{server.name}.pyspy.txt")
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(raw, copy)  # the whole profile, for a flame graph
    return {
        **summarize(raw.read_text()),
        "concurrency": concurrency,
        "accepted": figures["accepted"],
    }


def summarize(collapsed: str) -> dict[str, Any]:
    """Shares of the named frames (inclusive) and the functions with the most self time, from
    py-spy's collapsed stacks (``frame;frame;... count``; idle samples are not recorded)."""
    total, counts = 0, dict.fromkeys(PROFILE_FRAMES, 0)
    own: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        samples = int(number)
        total += samples
        frames = stack.split(";")
        names = {frame.split(" (", 1)[0] for frame in frames}
        for name in PROFILE_FRAMES:
            if name in names:
                counts[name] += samples
        own[_short(frames[-1])] += samples
    return {
        "samples": total,
        "shares": {name: counts[name] / total if total else 0.0 for name in PROFILE_FRAMES},
        "self": [(name, n / total) for name, n in own.most_common(TOP_FRAMES)] if total else [],
    }


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(
        parts[parts.index("site-packages") + 1 :] if "site-packages" in parts else parts[-2:]
    )
    return f"{func} ({short})" if short else func


def _verdict(
    levels: list[dict[str, Any]], accepted: dict[str, int], stored: dict[str, int]
) -> dict[str, Any]:
    errors = {
        f"{level['concurrency']}/{name}": level[name]["errors"]
        for level in levels
        for name in ("service", "floor")
        if level[name]["errors"]
    }
    ratios = {level["concurrency"]: level["ratio"] for level in levels}
    checks = {
        str(at): {
            "ratio": ratios.get(at),
            "target": target,
            "met": None if at not in ratios else ratios[at] >= target,
        }
        for at, target in TARGET_RATIOS.items()
    }
    at = [level for level in levels if level["concurrency"] == TARGET_P99_AT]
    p99 = at[0]["service"]["p99_ms"] if at else None
    lost = {name: accepted.get(name, 0) - stored.get(name, 0) for name in ("service", "floor")}
    return {
        "valid": not errors and not any(lost.values()),
        "errors": errors,
        "lost": lost,
        "ratios": checks,
        "p99_at_target_ms": p99,
        "p99_met": None if p99 is None else p99 < TARGET_P99_MS,
    }


def _floor_resets(result: dict[str, Any]) -> bool:
    # Results from before the field was recorded had asyncpg's default reset.
    return bool(result.get("floor_pool_reset", True))


def _reset(result: dict[str, Any]) -> str:
    if _floor_resets(result):
        return " (asyncpg's reset query on every release)"
    return " without a reset query on release (one autocommit INSERT leaves nothing to reset)"


def _floor_changed(result: dict[str, Any], previous: dict[str, Any] | None) -> str:
    if previous is None or _floor_resets(previous) == _floor_resets(result):
        return ""
    return (
        " **The floor changed since the previous run:** its pool then sent asyncpg's reset"
        " query on every release, one round trip more per request; the ratios' previous values"
        " were measured against that slower floor."
    )


def render(result: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    client = {"raw": "a minimal HTTP/1.1 client on asyncio streams", "httpx": "httpx"}
    ceiling = result.get("loadgen_ceiling") or {}
    was_levels = {level["concurrency"]: level for level in (previous or {}).get("levels", [])}
    lines = [
        "## Intake",
        "",
        f"Measured {result.get('date', '?')}. `POST /v1/deletion-requests` (kind `account`, a"
        " distinct `tenant_id` each time, bearer JWT) on the service (`soundops-deletion"
        f" serve`, {result.get('environment', 'production')} settings, no worker, PostgreSQL"
        " tracking database) against the"
        " thinnest-endpoint floor (`bench/floor_app.py`: FastAPI, a pydantic body, PyJWT"
        " verifying the token on every request, one raw asyncpg INSERT into the same"
        f" `deletion_requests` table from an `asyncpg.create_pool` pool{_reset(result)}; no"
        f" ORM, no middleware, no logging).{_floor_changed(result, previous)} A closed-loop"
        " load generator in its own process (`bench/loadgen.py`,"
        f" {client.get(result['client'], result['client'])}, keep-alive connections) runs"
        f" {result['warmup']:g} s of warm-up, then {result['seconds']:g} s measured per level"
        f" and server; {_alternation(result.get('rounds', 1))} Machine: {result['machine']}.",
        "",
    ]
    if ceiling:
        lines += [
            f"The load generator's own ceiling (against a trivial server that answers a canned"
            f" 202, {ceiling['concurrency']} connections): **{ceiling['requests_per_second']:,.0f}"
            f" req/s** using {ceiling['loadgen_cores']:.2f} cores (before:"
            f" {previously(previous, 'loadgen_ceiling', 'requests_per_second', fmt='{:,.0f}')})"
            " - the client is not what limits the figures below.",
            "",
        ]
    lines += [
        "| connections | service req/s | floor req/s | ratio (before) | ratio per round "
        "| service p50 / p99 ms "
        "(p99 before) | floor p50 / p99 ms | server CPU ms/request service / floor (before) "
        "| other load, cores |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for level in result["levels"]:
        s, f = level["service"], level["floor"]
        was = was_levels.get(level["concurrency"])
        was_ratio = previously(was, "ratio", fmt="{:.2f}")
        was_p99 = previously(was, "service", "p99_ms", fmt="{:.1f}")
        was_cpu = " / ".join(
            previously(was, name, "server_cpu_ms_per_request", fmt="{:.2f}")
            for name in ("service", "floor")
        )
        lines.append(
            f"| {level['concurrency']} | {s['requests_per_second']:.0f} "
            f"| {f['requests_per_second']:.0f} | **{level['ratio']:.2f}** ({was_ratio}) "
            f"| {', '.join(f'{r:.2f}' for r in level.get('round_ratios', [level['ratio']]))} "
            f"| {s['p50_ms']:.1f} / {s['p99_ms']:.1f} ({was_p99}) "
            f"| {f['p50_ms']:.1f} / {f['p99_ms']:.1f} "
            f"| {s.get('server_cpu_ms_per_request', math.nan):.2f} / "
            f"{f.get('server_cpu_ms_per_request', math.nan):.2f} ({was_cpu}) "
            f"| {s.get('foreign_cores', math.nan):.2f} / {f.get('foreign_cores', math.nan):.2f} |"
        )
    lines += ["", _verdict_line(result)]
    noisy = [
        level["concurrency"]
        for level in result["levels"]
        for name in ("service", "floor")
        if level[name].get("foreign_cores", 0.0) > 0.25
    ]
    if noisy:
        lines += [
            "",
            "Other processes used more than a quarter of a core during the runs at "
            f"{', '.join(map(str, sorted(set(noisy))))} connections: absolute figures there "
            "are low, the ratios (service and floor alternate) less affected.",
        ]
    lines += _profile_lines(result.get("profile"), result.get("floor_profile"))
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def _alternation(rounds: int) -> str:
    if rounds <= 1:
        return "service and floor alternate at each level."
    return (
        f"service and floor alternate {rounds} times at each level (each run"
        " with its own warm-up), so that a change in the machine's other load falls on both;"
        " a level's figures pool its runs (rate: all requests over all measured time;"
        " percentiles: of all latencies), and the ratio of each pair of runs is shown beside"
        " the level's."
    )


def _profile_lines(profile: dict[str, Any] | None, floor: dict[str, Any] | None) -> list[str]:
    if not profile:
        return []
    if "error" in profile:
        return ["", f"Profile: {profile['error']}."]
    lines = [
        "",
        f"Where the service's time goes at {profile['concurrency']} connections (py-spy, "
        f"{profile['samples']} samples of its busy time; a frame's share includes what it calls):",
        "",
    ]
    for name, label in PROFILE_FRAMES.items():
        share = profile["shares"].get(name, 0.0)
        if share >= 0.005:
            indent = "  " * ((len(label) - len(label.lstrip())) // 2)
            lines.append(f"{indent}- {label.strip()}: {share:.0%}")
    if profile.get("self"):
        lines += ["", "| the service's top frames by own time | share |", "|---|---:|"]
        lines += [f"| `{name}` | {share:.1%} |" for name, share in profile["self"]]
    if floor and floor.get("self"):
        lines += ["", "| the floor's top frames by own time | share |", "|---|---:|"]
        lines += [f"| `{name}` | {share:.1%} |" for name, share in floor["self"]]
    return lines


def _verdict_line(result: dict[str, Any]) -> str:
    verdict = result["verdict"]
    accepted, stored = result.get("accepted", {}), result.get("stored", {})
    rows = (
        f"rows stored / answers 202: service {stored.get('service', '?')} /"
        f" {accepted.get('service', '?')}, floor {stored.get('floor', '?')} /"
        f" {accepted.get('floor', '?')}"
    )
    if not verdict["valid"]:
        return (
            f"**Verdict: not valid**: answers other than 202: {verdict['errors'] or 'none'};"
            f" {rows}."
        )
    parts = []
    for at, check in verdict["ratios"].items():
        if check["met"] is None:
            parts.append(f"ratio at {at} connections: not measured")
        else:
            met = "met" if check["met"] else "**missed**"
            parts.append(f"ratio {check['ratio']:.2f} >= {check['target']:.2f} at {at}: {met}")
    p99 = verdict["p99_at_target_ms"]
    if p99 is None:
        parts.append(f"p99 at {TARGET_P99_AT} connections: not measured")
    else:
        met = "met" if verdict["p99_met"] else "**missed**"
        parts.append(f"p99 {p99:.1f} ms < {TARGET_P99_MS:g} ms at {TARGET_P99_AT}: {met}")
    return f"**Verdict** (every answer 202; {rows}): " + "; ".join(parts) + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    result.setdefault("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(render(result))


if __name__ == "__main__":
    main()
