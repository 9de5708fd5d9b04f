"""Closed-loop HTTP load generator for the intake benchmark (its own process).

N concurrent loops on N keep-alive connections each POST an ``account`` request
with a distinct subject (a fresh ``tenant_id``) to ``URL/v1/deletion-requests``,
one after the other. After ``--warmup`` seconds, the requests that finish in the
next ``--seconds`` are counted: requests/s, latency percentiles, and every answer
that was not the expected status (warm-up and drain included). Prints one JSON
object on stdout.

Two clients: ``httpx`` (an ``AsyncClient``, ``trust_env=False``) and ``raw`` (the
default: a minimal HTTP/1.1 keep-alive client on asyncio streams). On a 2-core
machine the load generator shares the CPU with the server and PostgreSQL; httpx
spends about 1 ms of CPU per request (as much as the floor endpoint itself), the raw
client a tenth of that, so the raw client takes far less CPU away from the server.

CPU is sampled from /proc over the measured window: the server's (``--pid``), the
load generator's own, and the machine's; with ``--ours`` (process ids whose process
trees belong to this benchmark: the bench itself, the PostgreSQL postmaster) the CPU
of everything else on the machine is reported as ``foreign_cores`` (noise).

    .venv/bin/python -m bench.loadgen --url http://127.0.0.1:8000 --token JWT \
        --concurrency 64 [--seconds 10] [--warmup 2] [--pid SERVER_PID] [--client raw]

``--serve-trivial PORT`` instead runs a trivial server (a canned 202 for every request,
no framework, on uvloop): the load generator driven against it measures its own
ceiling, so that a reader knows the client is not what limits a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

PATH = "/v1/deletion-requests"
BODY = '{"kind":"account","subject":{"tenant_id":"%s"}}'
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Send = Callable[[bytes], Awaitable[str]]
T = TypeVar("T")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


# --------------------------------------------------------------------------- CPU


def _stat(pid: int | str) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of one process, from /proc; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def processes() -> dict[int, tuple[int, float]]:
    """Every process: pid -> (parent pid, CPU seconds)."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _stat(name)) is not None:
            found[int(name)] = stat
    return found


def tree_cpu(table: dict[int, tuple[int, float]], roots: set[int]) -> tuple[float, float]:
    """(CPU seconds inside the trees of ``roots``, CPU seconds of every process)."""
    inside, total = 0.0, 0.0
    for pid, (_parent, cpu) in table.items():
        total += cpu
        walk, seen = pid, 0
        while walk > 1 and seen < 64:
            if walk in roots:
                inside += cpu
                break
            walk, seen = table[walk][0] if walk in table else 0, seen + 1
    return inside, total


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------- clients


class RawConnection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer's status."""

    def __init__(self, host: str, port: int, head: bytes) -> None:
        self._host, self._port, self._head = host, port, head
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def send(self, body: bytes) -> str:
        """POST ``body``; the answer's status, or the name of the error that ended the
        connection (it is opened again for the next)."""
        return (await self.exchange(body))[0]

    async def exchange(self, body: bytes) -> tuple[str, bytes]:
        """:meth:`send`, with the answer's body (empty after an error)."""
        try:
            return await self._exchange(body)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            await self.close()
            return type(exc).__name__, b""

    async def _exchange(self, body: bytes) -> tuple[str, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        writer.write(self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head[9:12].decode()
        length, chunked, close = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        content = b""
        if chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                content += (await reader.readexactly(size + 2))[:size]
                if size == 0:
                    break
        elif length:
            content = await reader.readexactly(length)
        if close:
            await self.close()
        return status, content


def raw_clients(
    url: str,
    token: str | None,
    count: int,
    path: str = PATH,
    content_type: str = "application/json",
) -> list[RawConnection]:
    """``count`` connections that POST to ``url`` + ``path`` (with a bearer token when
    one is given)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{auth}"
        f"Content-Type: {content_type}\r\nAccept: */*\r\n"
    ).encode()
    return [RawConnection(host, port, head) for _ in range(count)]


# ----------------------------------------------------------------- trivial server

TRIVIAL_ANSWER = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
)


class TrivialProtocol(asyncio.Protocol):
    """Answers every HTTP/1.1 request (Content-Length bodies) with a canned 202."""

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self._buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self._buffer) < end + 4 + length:
                return
            self._buffer = self._buffer[end + 4 + length :]
            assert self._transport is not None
            self._transport.write(TRIVIAL_ANSWER)


async def serve_trivial(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(TrivialProtocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------------------- run


async def generate(args: argparse.Namespace) -> dict[str, Any]:
    concurrency: int = args.concurrency
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    expected = str(args.expect)
    stop = asyncio.Event()
    started = time.perf_counter()
    window_start = started + args.warmup
    window_end = window_start + args.seconds
    samples: dict[str, dict[str, Any]] = {}
    roots = set(args.ours)

    client = httpx.AsyncClient(
        base_url=args.url,
        headers={"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"},
        limits=httpx.Limits(
            max_connections=concurrency,
            max_keepalive_connections=concurrency,
            keepalive_expiry=None,
        ),
        timeout=httpx.Timeout(30.0),
        trust_env=False,  # never through a proxy from the environment
    )

    async def httpx_send(content: bytes) -> str:
        try:
            response = await client.post(PATH, content=content)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return str(response.status_code)

    raw = raw_clients(args.url, args.token, concurrency) if args.client == "raw" else []

    async def loop(send: Send) -> None:
        while not stop.is_set():
            content = (BODY % uuid.uuid4()).encode()
            sent = time.perf_counter()
            outcome = await send(content)
            done = time.perf_counter()
            statuses[outcome] += 1
            if outcome == expected and window_start <= done <= window_end:
                latencies.append(done - sent)

    def sample(name: str) -> None:
        table = processes() if roots else {}
        samples[name] = {
            "at": time.perf_counter(),
            "own": own_cpu_seconds(),
            "machine": machine_cpu(),
            "server": server[1] if args.pid and (server := _stat(args.pid)) else 0.0,
            "trees": tree_cpu(table, roots) if roots else (0.0, 0.0),
        }

    async def clock() -> None:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        sample("start")
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        sample("end")
        stop.set()

    senders: list[Send] = (
        [connection.send for connection in raw] if raw else [httpx_send] * concurrency
    )
    try:
        loops = [asyncio.create_task(loop(send)) for send in senders]
        await clock()
        await asyncio.wait_for(asyncio.gather(*loops), timeout=60)
    finally:
        for connection in raw:
            await connection.close()
        await client.aclose()

    first, last = samples["start"], samples["end"]
    elapsed = last["at"] - first["at"]
    latencies.sort()
    count = len(latencies)
    busy = last["machine"][0] - first["machine"][0]
    total = last["machine"][1] - first["machine"][1]
    result: dict[str, Any] = {
        "url": args.url,
        "client": args.client,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests": count,
        "answers_total": sum(statuses.values()),
        "accepted": statuses[expected],
        "errors": {status: n for status, n in statuses.items() if status != expected},
        "requests_per_second": count / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] * 1000) if latencies else math.nan,
        # Where the CPU went during the window, in cores (1.0 = one core fully busy).
        "loadgen_cores": (last["own"] - first["own"]) / elapsed,
        "machine_busy_fraction": busy / total if total else math.nan,
    }
    if getattr(args, "latencies", False):
        result["latencies_ms"] = [round(latency * 1000, 3) for latency in latencies]
    if args.pid:
        server_cpu = last["server"] - first["server"]
        result["server_cores"] = server_cpu / elapsed
        result["server_cpu_ms_per_request"] = server_cpu * 1000 / count if count else math.nan
    if roots:
        inside = last["trees"][0] - first["trees"][0]
        everything = last["trees"][1] - first["trees"][1]
        result["ours_cores"] = inside / elapsed
        result["foreign_cores"] = max(0.0, everything - inside) / elapsed
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", default="", help="bearer token sent with every request")
    parser.add_argument(
        "--serve-trivial", type=int, metavar="PORT", help="run the trivial server instead"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--expect", type=int, default=202, help="the only acceptable status")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument(
        "--latencies",
        action="store_true",
        help="also output every latency (ms), for pooling runs' percentiles",
    )
    parser.add_argument("--pid", type=int, default=0, help="server process to sample CPU of")
    parser.add_argument(
        "--ours", type=int, nargs="*", default=[], help="roots of this benchmark's process trees"
    )
    args = parser.parse_args()
    if args.serve_trivial:
        _run(serve_trivial(args.serve_trivial))
        return
    if not args.url:
        parser.error("--url is required")
    print(json.dumps(_run(generate(args))))


def _run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    main()
