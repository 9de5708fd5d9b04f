"""What the benchmarks share: the service as a real process, tokens, the machine's description."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt

from testsupport.harness.services import ferretdb_backend, free_port, http_responds, run_dir

BIN = Path(sys.executable).parent / "soundops-deletion"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef"
HASH_KEY = "bench-hash-key-0123456789"
RECEIPT_KEY = "YmVuY2gtcmVjZWlwdC1zaWduaW5nLWtleS0zMmJ5dGU="


def token(scopes: str = "deletions:admin deletions:write deletions:read", ttl: int = 7200) -> str:
    now = int(time.time())
    claims = {"sub": "bench", "scope": scopes, "aud": "soundops-deletion", "iat": now}
    claims["exp"] = now + ttl
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def service_env(**settings: str) -> dict[str, str]:
    """The environment of a service process: no DELETION_* of the caller, bench secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELETION_")}
    env.update(
        DELETION_ENVIRONMENT="test",
        DELETION_JWT_SECRET=JWT_SECRET,
        DELETION_HASH_KEY=HASH_KEY,
        DELETION_RECEIPT_SIGNING_KEY=RECEIPT_KEY,
    )
    env.update({f"DELETION_{k.upper()}": v for k, v in settings.items()})
    return env


class ServiceProcess:
    """``soundops-deletion serve`` in a process of its own; its log goes to a file."""

    def __init__(self, env: dict[str, str], name: str = "service") -> None:
        self.port = free_port()
        self.log_path = run_dir() / f"bench-{name}-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(BIN), "serve", "--port", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not http_responds(f"{self.url}/healthz"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the service did not start:\n{tail}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def peak_rss_mb(self) -> float:
        """The process's high-water mark of resident memory (VmHWM), in MiB."""
        return _status_kib(self.pid, "VmHWM") / 1024

    def rss_mb(self) -> float:
        return _status_kib(self.pid, "VmRSS") / 1024

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def _first_line(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not found"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def machine() -> dict[str, Any]:
    """CPU, cores, memory, kernel and the versions of the servers the run used."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = _status_like("/proc/meminfo", "MemTotal")
    pg_bindir = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")
    ferretdb = os.environ.get("FERRETDB_BIN", str(Path(".cache/bin/ferretdb").absolute()))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": _first_line([f"{pg_bindir}/postgres", "--version"]),
        "ferretdb": _first_line([ferretdb, "--version"]),
        "ferretdb_backend": (
            "PostgreSQL backend (a cluster of its own)"
            if ferretdb_backend() == "postgresql"
            else "SQLite backend"
        ),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _status_like(path: str, field: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


Snapshot = dict[int, tuple[str, float]]


def cpu_snapshot() -> Snapshot:
    """CPU seconds (user + system) of every process now: pid -> (label, seconds)."""
    ticks = os.sysconf("SC_CLK_TCK")
    snapshot: Snapshot = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / ticks
        snapshot[int(entry.name)] = (
            _label(stat[stat.index("(") + 1 : stat.rindex(")")], cmdline),
            seconds,
        )
    return snapshot


def _label(comm: str, cmdline: str) -> str:
    postgres = comm.startswith("postgres") or "postgres:" in cmdline
    if postgres and "ferretdb" in cmdline:  # a backend of FerretDB's database `ferretdb`
        return "PostgreSQL under FerretDB"
    if "ferretdb" in comm or "ferretdb" in cmdline:
        return "FerretDB"
    if postgres:
        return "PostgreSQL"
    if "moto" in cmdline:
        return "moto (S3)"
    if "soundops-deletion" in cmdline:
        return "service"
    if "bench" in cmdline:
        return "bench script"
    return "other"


def cpu_used(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds spent between two snapshots, per label (processes started since count whole)."""
    used: dict[str, float] = {}
    for pid, (label, seconds) in after.items():
        spent = seconds - before.get(pid, (label, 0.0))[1]
        used[label] = used.get(label, 0.0) + max(0.0, spent)
    return {
        label: round(seconds, 1) for label, seconds in sorted(used.items(), key=lambda kv: -kv[1])
    }


def previously(previous: dict[str, Any] | None, *keys: str | int, fmt: str = "{}") -> str:
    """A figure of the previous run, for the "before" column: "-" when it has none.

    ``previous`` is a part's result of the run before; its shape may be older than the
    current one, so every missing key reads as "not measured then".
    """
    value: Any = previous
    for key in keys:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return "-"
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return "-"
