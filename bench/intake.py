"""Intake throughput: POST /v1/deletion-requests on the service against the stack's floor.

Starts a throwaway PostgreSQL 15 (or uses ``TEST_POSTGRES_URL``), migrates a fresh
tracking database and starts the real service (``soundops-deletion serve``, production
settings, no worker, no target store) and, on a second database, the floor
(``bench/floor_app.py``: one validated body, one INSERT, same stack, no auth), one
uvicorn process each, started the same way (``serve`` calls ``uvicorn.run`` with
``log_level="info"``, so both write uvicorn's access log; both go to a file). At each
concurrency level a load generator in its own process (``bench/loadgen.py``) drives the
service and then the floor (the order alternates between levels) with distinct subjects
on keep-alive connections; every answer must be 202 for a valid result.

    .venv/bin/python -m bench.intake [--seconds 10] [--warmup 2] [--levels 1 8 32 64]
        [--client raw|httpx] [--profile] [--json results.json]

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
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.auth import Scope, mint_token
from app.db import upgrade_sync
from app.settings import Settings
from testsupport.harness.services import (
    PostgresServer,
    free_port,
    http_responds,
    log_tail,
    start_postgres,
    to_asyncpg_url,
)

PYTHON = sys.executable
BIN = Path(PYTHON).parent / "soundops-deletion"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef"
HASH_KEY = "bench-hash-key-0123456789"
RECEIPT_KEY = "YmVuY2gtcmVjZWlwdC1zaWduaW5nLWtleS0zMmJ5dGU="  # base64 of 32 bytes
PUBLIC_BASE_URL = "https://deletion.bench.invalid"

TARGET_RATIO = 0.70
TARGET_P99_MS = 100.0
TARGET_P99_AT = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per level and target"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each")
    parser.add_argument(
        "--levels", type=int, nargs="+", default=[1, 8, 32, 64], help="concurrent connections"
    )
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load generator's HTTP client (httpx costs ~1 ms of CPU a request)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the measured runs, sample the service with py-spy at the highest level "
        "and add where its time goes (pip install py-spy)",
    )


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
    name: str, command: list[str], env: dict[str, str], port: int, logs: Path
) -> Server:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not http_responds(f"{url}/healthz"):
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
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--pid",
        str(server.process.pid),
        "--client",
        args.client,
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
    parts = [".venv/bin/python", "-m", "bench.intake", "--seconds", f"{args.seconds:g}"]
    parts += ["--warmup", f"{args.warmup:g}", "--levels", *map(str, args.levels)]
    if args.client != "raw":
        parts += ["--client", args.client]
    if args.profile:
        parts.append("--profile")
    return shlex.join(parts)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    external = os.environ.get("TEST_POSTGRES_URL")
    pg = PostgresServer(external) if external else start_postgres()
    suffix = uuid.uuid4().hex[:8]
    service_db, floor_db = f"bench_intake_service_{suffix}", f"bench_intake_floor_{suffix}"
    servers: list[Server] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
            logs = Path(tmp)
            for name in (service_db, floor_db):
                pg.create_database(name)
            service_url = to_asyncpg_url(pg.url(service_db))
            await asyncio.to_thread(upgrade_sync, service_url)

            env = _clean_env()
            env.update(
                DELETION_ENVIRONMENT="production",
                DELETION_PUBLIC_BASE_URL=PUBLIC_BASE_URL,
                # Intake only: no store is reached, and production insists on saying so.
                DELETION_ABSENT_STORES="postgres,mongodb,s3,meta_graph",
                DELETION_DATABASE_URL=service_url,
                DELETION_RUN_WORKER="false",
                DELETION_JWT_SECRET=JWT_SECRET,
                DELETION_HASH_KEY=HASH_KEY,
                DELETION_RECEIPT_SIGNING_KEY=RECEIPT_KEY,
            )
            port = free_port()
            service = _start_server(
                "service", [str(BIN), "serve", "--port", str(port)], env, port, logs
            )
            servers.append(service)
            floor_env = _clean_env()
            floor_env["FLOOR_DATABASE_URL"] = to_asyncpg_url(pg.url(floor_db))
            port = free_port()
            floor = _start_server(
                "floor",
                [PYTHON, "-m", "bench.floor_app", "--port", str(port)],
                floor_env,
                port,
                logs,
            )
            servers.append(floor)

            settings = Settings(
                environment="production",
                database_url=service_url,
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
            levels: list[dict[str, Any]] = []
            for index, concurrency in enumerate(args.levels):
                order = [service, floor] if index % 2 == 0 else [floor, service]
                figures: dict[str, Any] = {}
                for server in order:
                    figures[server.name] = await _load(server, token, concurrency, args, ours)
                rate, floor_rate = (
                    figures["service"]["requests_per_second"],
                    figures["floor"]["requests_per_second"],
                )
                levels.append(
                    {
                        "concurrency": concurrency,
                        "service": figures["service"],
                        "floor": figures["floor"],
                        "ratio": rate / floor_rate if floor_rate else math.nan,
                    }
                )
            profile = (
                await _profile(service, token, max(args.levels), args, ours, logs)
                if args.profile
                else None
            )
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
        "seconds": args.seconds,
        "warmup": args.warmup,
        "client": args.client,
        "floor_auth": "none",
        "targets": {"ratio": TARGET_RATIO, "p99_ms": TARGET_P99_MS, "p99_at": TARGET_P99_AT},
        "levels": levels,
        "verdict": _verdict(levels),
        "profile": profile,
    }


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
    "solve_dependencies": "dependencies: body validation, bearer JWT, scope",
    "PyJWT.decode": "  of which JWT verification",
    "RequestService.create": "intake service (`RequestService.create`)",
    "insert_new_request": "  of which storing (`repository.insert_new_request`)",
    "AsyncSession.connection": "    pool checkout, pre-ping (BEGIN; ROLLBACK) and BEGIN",
    "AsyncConnection.scalar": "    the one INSERT statement (four tables)",
    "AsyncSession.commit": "  COMMIT",
    "request_out": "response model (`presenters.request_out`)",
    "serialize_response": "response validation and JSON",
    "RequestResponseCycle.send": "writing the response to the socket",
    "Logger.info": "uvicorn's access log",
    "_make_filtering_bound_logger.<locals>.make_method.<locals>.meth": "`request_created` log line",
}


async def _profile(
    service: Server,
    token: str,
    concurrency: int,
    args: argparse.Namespace,
    ours: list[int],
    logs: Path,
) -> dict[str, Any]:
    """Sample the service with py-spy during one more run (not a measured one)."""
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(py_spy).exists():
        return {"error": "py-spy is not installed (pip install py-spy)"}
    raw = logs / "service.pyspy"
    duration = max(2, int(args.seconds))
    load = asyncio.create_task(_load(service, token, concurrency, args, ours))
    await asyncio.sleep(args.warmup)
    spy = await asyncio.create_subprocess_exec(
        py_spy, "record", "--pid", str(service.process.pid), "--duration", str(duration),
        "--rate", "200", "--format", "raw", "--output", str(raw),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await spy.communicate()
    await load
    if spy.returncode != 0 or not raw.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}"}
    total, counts = 0, dict.fromkeys(PROFILE_FRAMES, 0)
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        samples = int(number)
        total += samples
        names = {frame.split(" (", 1)[0] for frame in stack.split(";")}
        for name in PROFILE_FRAMES:
            if name in names:
                counts[name] += samples
    return {
        "concurrency": concurrency,
        "samples": total,
        "shares": {name: counts[name] / total if total else 0.0 for name in PROFILE_FRAMES},
    }


def _verdict(levels: list[dict[str, Any]]) -> dict[str, Any]:
    errors = {
        f"{level['concurrency']}/{name}": level[name]["errors"]
        for level in levels
        for name in ("service", "floor")
        if level[name]["errors"]
    }
    low = [
        {"concurrency": level["concurrency"], "ratio": level["ratio"]}
        for level in levels
        if not level["ratio"] >= TARGET_RATIO
    ]
    at = [level for level in levels if level["concurrency"] == TARGET_P99_AT]
    p99 = at[0]["service"]["p99_ms"] if at else None
    return {
        "valid": not errors,
        "errors": errors,
        "ratio_met": not low,
        "ratio_missed": low,
        "min_ratio": min((level["ratio"] for level in levels), default=math.nan),
        "p99_at_target_ms": p99,
        "p99_met": None if p99 is None else p99 < TARGET_P99_MS,
    }


def render(result: dict[str, Any]) -> str:
    verdict = result["verdict"]
    client = {"raw": "a minimal HTTP/1.1 client on asyncio streams", "httpx": "httpx"}
    lines = [
        "## Intake",
        "",
        "`POST /v1/deletion-requests` (kind `account`, a distinct `tenant_id` each time, bearer "
        "JWT) on the service (`soundops-deletion serve`, production settings, no worker, "
        "PostgreSQL tracking database) against the stack's floor (`bench/floor_app.py`: the same "
        "uvicorn call, FastAPI, a pydantic body, SQLAlchemy async + asyncpg with the service's "
        f"pool settings, one INSERT, auth: {result['floor_auth']}). A closed-loop load generator "
        f"in its own process (`bench/loadgen.py`, {client.get(result['client'], result['client'])}"
        f", keep-alive connections) runs {result['warmup']:g} s of warm-up, then "
        f"{result['seconds']:g} s measured per level and target; service and floor alternate "
        f"at each level. Machine: {result['machine']}.",
        "",
        "| connections | service req/s | floor req/s | ratio | service p50 / p99 ms "
        "| floor p50 / p99 ms | server CPU ms/request service / floor "
        "| other load on the machine, cores |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in result["levels"]:
        s, f = level["service"], level["floor"]
        lines.append(
            f"| {level['concurrency']} | {s['requests_per_second']:.0f} "
            f"| {f['requests_per_second']:.0f} | {level['ratio']:.2f} "
            f"| {s['p50_ms']:.1f} / {s['p99_ms']:.1f} | {f['p50_ms']:.1f} / {f['p99_ms']:.1f} "
            f"| {s.get('server_cpu_ms_per_request', math.nan):.2f} / "
            f"{f.get('server_cpu_ms_per_request', math.nan):.2f} "
            f"| {s.get('foreign_cores', math.nan):.2f} / {f.get('foreign_cores', math.nan):.2f} |"
        )
    lines += ["", _verdict_line(verdict)]
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
    lines += _profile_lines(result.get("profile"))
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def _profile_lines(profile: dict[str, Any] | None) -> list[str]:
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
    return lines


def _verdict_line(verdict: dict[str, Any]) -> str:
    if not verdict["valid"]:
        return f"**Verdict: not valid**, answers other than 202: {verdict['errors']}."
    parts = []
    if verdict["ratio_met"]:
        parts.append(
            f"ratio >= {TARGET_RATIO:.2f} at every level (lowest {verdict['min_ratio']:.2f}): met"
        )
    else:
        missed = ", ".join(
            f"{m['ratio']:.2f} at {m['concurrency']}" for m in verdict["ratio_missed"]
        )
        needed = TARGET_RATIO / verdict["min_ratio"] if verdict["min_ratio"] > 0 else math.inf
        parts.append(
            f"ratio >= {TARGET_RATIO:.2f}: **missed** ({missed}; the service needs "
            f"{needed:.2f}x its throughput at the worst level)"
        )
    p99 = verdict["p99_at_target_ms"]
    if p99 is None:
        parts.append(f"p99 at {TARGET_P99_AT} connections: not measured")
    elif verdict["p99_met"]:
        parts.append(f"p99 {p99:.1f} ms < {TARGET_P99_MS:g} ms at {TARGET_P99_AT}: met")
    else:
        parts.append(
            f"p99 {p99:.1f} ms at {TARGET_P99_AT} connections: **missed** by "
            f"{p99 - TARGET_P99_MS:.1f} ms"
        )
    return "**Verdict** (every answer was 202): " + "; ".join(parts) + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(render(result))


if __name__ == "__main__":
    main()
