"""Real servers for the tests: PostgreSQL 15, FerretDB (MongoDB wire protocol), moto (S3),
Dovecot (IMAP).

Plain synchronous code (subprocess, socket, urllib). Every server listens on a free
127.0.0.1 port, keeps its data in a temporary folder of this process, and is stopped
when the test session ends: by the fixtures, by ``atexit``, on SIGTERM/SIGHUP, and on
the next run for anything a killed run left behind (see ``_reap_stale_runs``).

See shared/spec/test-services.md for why each server is run the way it is.
"""

from __future__ import annotations

import atexit
import contextlib
import imaplib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Protocol, Self
from urllib.parse import quote, urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PG_BINDIR = "/usr/lib/postgresql/15/bin"
DEFAULT_FERRETDB_BIN = REPO_ROOT / ".cache" / "bin" / "ferretdb"
RUN_DIR_PREFIX = "soundops-test-"
START_TIMEOUT = float(os.environ.get("TEST_SERVICE_START_TIMEOUT", "60"))
STOP_TIMEOUT = 15.0


class ServiceError(RuntimeError):
    """A test server could not be started, stopped or used."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) if tail else "    (empty)"


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    # Loopback servers must never be reached through an HTTP proxy from the environment.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_responds(url: str, timeout: float = 1.0) -> bool:
    """True when anything answers HTTP at url (any status code counts)."""
    try:
        with _no_proxy_opener().open(url, timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        exc.close()
        return True
    except (OSError, ValueError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _setpriv_prefix() -> list[str]:
    """Make a child get SIGTERM if this process dies without cleaning up (Linux).

    The parent-death signal fires when the *thread* that spawned the child exits, so it
    is only used for children spawned from the main thread.
    """
    setpriv = shutil.which("setpriv")
    if setpriv and threading.current_thread() is threading.main_thread():
        return [setpriv, "--pdeathsig", "TERM", "--"]
    return []


# --------------------------------------------------------------- run dir & cleanup

_lock = threading.RLock()
_run_dir: Path | None = None
_services: list[_Closable] = []
_signals_installed = False


class _Closable(Protocol):
    def close(self) -> None: ...


def _processes_inside(directory: Path) -> list[int]:
    """Pids of the processes whose working directory is inside directory (Linux /proc)."""
    prefix = str(directory.resolve())
    pids: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == prefix or cwd.startswith(prefix + "/"):
            pids.append(int(entry.name))
    return pids


def _kill_all(pids: Sequence[int], grace: float = 5.0) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _reap_stale_runs() -> None:
    """Stop servers and remove folders that an earlier, killed test run left behind.

    A run folder whose owner process is gone is stale; every process whose working
    directory is inside it (all servers here run with their cwd in it) is ended.
    """
    base = Path(tempfile.gettempdir())
    for run in base.glob(RUN_DIR_PREFIX + "*"):
        try:
            owner = int((run / "owner.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        _kill_all(_processes_inside(run))
        shutil.rmtree(run, ignore_errors=True)


def run_dir() -> Path:
    """This process's temporary folder for all servers (created on first use)."""
    global _run_dir
    with _lock:
        if _run_dir is None:
            _reap_stale_runs()
            path = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-"))
            path.chmod(0o755)  # the postgres user must be able to enter it
            (path / "owner.pid").write_text(f"{os.getpid()}\n")
            _run_dir = path
            atexit.register(close_all)
            _install_signal_handlers()
        return _run_dir


def _register(service: _Closable) -> None:
    with _lock:
        _services.append(service)


def _unregister(service: _Closable) -> None:
    with _lock, contextlib.suppress(ValueError):
        _services.remove(service)


def close_all() -> None:
    """Stop every server started by this process and remove the run folder."""
    global _run_dir
    with _lock:
        services = list(reversed(_services))
        for service in services:
            with contextlib.suppress(Exception):
                service.close()
        _services.clear()
        if _run_dir is not None:
            _kill_all(_processes_inside(_run_dir))
            shutil.rmtree(_run_dir, ignore_errors=True)
            _run_dir = None


def _on_fatal_signal(signum: int, frame: FrameType | None) -> None:
    close_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    """Clean up on SIGTERM/SIGHUP too (SIGINT raises KeyboardInterrupt, so atexit runs)."""
    global _signals_installed
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _on_fatal_signal)
    _signals_installed = True


# ---------------------------------------------------------------------- PostgreSQL


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def to_asyncpg_url(url: str) -> str:
    """postgresql://... -> postgresql+asyncpg://... (SQLAlchemy's asyncpg dialect)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg"))


def to_plain_url(url: str) -> str:
    """postgresql+asyncpg:// or postgres:// -> postgresql:// (psql, asyncpg.connect)."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return urlunsplit(parts._replace(scheme="postgresql"))


def with_database(url: str, dbname: str) -> str:
    """The same server URL with another database name."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))


def find_psql(bindir: str | None = None) -> str:
    candidates = [Path(bindir or os.environ.get("PG_BINDIR") or DEFAULT_PG_BINDIR) / "psql"]
    which = shutil.which("psql")
    if which:
        candidates.append(Path(which))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ServiceError(
        "psql not found (looked in PG_BINDIR, /usr/lib/postgresql/15/bin and PATH); "
        "install postgresql-client-15"
    )


@dataclass(frozen=True)
class PgDatabase:
    """A database on the test server, in both URL forms."""

    name: str
    url: str  # postgresql://...  (psql, asyncpg.connect)
    async_url: str  # postgresql+asyncpg://...  (SQLAlchemy)


class FreshPgDatabase(Protocol):
    """The `fresh_pg_database` fixture: a factory of new, uniquely named databases."""

    def __call__(self, template: str | None = None, *, prefix: str = "test") -> PgDatabase: ...


class PostgresServer:
    """A PostgreSQL server reached through an admin URL whose user may CREATE DATABASE.

    Used as is for an external server (``TEST_POSTGRES_URL``); ``LocalPostgres`` adds
    start/stop/restart for the one this harness runs.
    """

    local = False

    def __init__(self, admin_url: str, *, psql: str | None = None) -> None:
        self.admin_url = to_plain_url(admin_url)
        self._psql = psql or find_psql()

    # URLs --------------------------------------------------------------
    @property
    def admin_database(self) -> str:
        return urlsplit(self.admin_url).path.lstrip("/") or "postgres"

    def url(self, dbname: str) -> str:
        """postgresql://user@host:port/dbname"""
        return with_database(self.admin_url, dbname)

    def async_url(self, dbname: str) -> str:
        """postgresql+asyncpg://user@host:port/dbname"""
        return to_asyncpg_url(self.url(dbname))

    def database(self, dbname: str) -> PgDatabase:
        return PgDatabase(dbname, self.url(dbname), self.async_url(dbname))

    # psql --------------------------------------------------------------
    def _run_psql(self, db: str, args: Sequence[str], timeout: float) -> str:
        cmd = [self._psql, "-X", "-q", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        cmd += ["-d", self.url(db), *args]
        env = dict(os.environ, PGCONNECT_TIMEOUT="10")
        try:
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"psql on {db!r} timed out after {timeout} s: {args}") from exc
        if done.returncode != 0:
            raise ServiceError(
                f"psql on database {db!r} failed (exit {done.returncode}): {args}\n"
                f"{done.stderr.strip()}"
            )
        return done.stdout

    def psql(self, db: str, sql: str, *, timeout: float = 60.0) -> str:
        """Run SQL with psql (stops at the first error); returns unaligned tuples-only output."""
        return self._run_psql(db, ["-c", sql], timeout).strip()

    def psql_file(self, db: str, path: str | os.PathLike[str], *, timeout: float = 300.0) -> None:
        """Run a SQL file with psql -v ON_ERROR_STOP=1 in one transaction."""
        file = Path(path)
        if not file.is_file():
            raise ServiceError(f"SQL file not found: {file}")
        self._run_psql(db, ["-1", "-f", str(file)], timeout)

    # databases ---------------------------------------------------------
    def database_exists(self, name: str) -> bool:
        escaped = name.replace("'", "''")
        out = self.psql(
            self.admin_database, f"SELECT 1 FROM pg_database WHERE datname = '{escaped}'"
        )
        return out == "1"

    def create_database(self, name: str, template: str | None = None) -> str:
        """CREATE DATABASE name [TEMPLATE template]; returns its postgresql:// URL."""
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if template:
            sql += f" TEMPLATE {_quote_ident(template)}"
        self.psql(self.admin_database, sql)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS name WITH (FORCE): connections to it are ended."""
        self.psql(self.admin_database, f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def unique_database_name(self, prefix: str = "test") -> str:
        return f"{prefix}_{uuid.uuid4().hex[:12]}"

    # lifecycle (only for the local server) ------------------------------
    def _external(self, what: str) -> ServiceError:
        return ServiceError(f"cannot {what} an external PostgreSQL server ({self.admin_url})")

    def start(self) -> None:
        raise self._external("start")

    def stop(self) -> None:
        raise self._external("stop")

    def restart(self) -> None:
        raise self._external("restart")

    def close(self) -> None:
        """Nothing to do for an external server."""


class LocalPostgres(PostgresServer):
    """PostgreSQL 15 in a temporary folder: initdb + pg_ctl, as the postgres user when root.

    ``start()`` initialises the cluster on first use. ``stop()``/``start()``/``restart()``
    keep the port and the data (outage tests). ``close()`` stops it and deletes the data.
    pg_ctl is always given ``-l LOGFILE``: without it the server inherits pg_ctl's
    stdout/stderr and ``capture_output`` would wait forever.
    """

    local = True

    def __init__(
        self,
        *,
        bindir: str | None = None,
        port: int | None = None,
        max_connections: int = 200,
    ) -> None:
        self.bindir = Path(bindir or os.environ.get("PG_BINDIR") or DEFAULT_PG_BINDIR)
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not (self.bindir / tool).is_file():
                raise ServiceError(
                    f"PostgreSQL server binary {self.bindir / tool} not found; install "
                    "postgresql-15 (scripts/test.sh does it as root), set PG_BINDIR, "
                    "or set TEST_POSTGRES_URL to an existing server"
                )
        self.port = port or free_port()
        self._fixed_port = port is not None
        self.max_connections = max_connections
        self.base = run_dir() / f"pg-{uuid.uuid4().hex[:6]}"
        self.data_dir = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log_path = self.base / "postgres.log"
        self._initialised = False
        self._ever_started = False
        self._closed = False
        own_psql = self.bindir / "psql"
        super().__init__(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
            psql=str(own_psql) if own_psql.is_file() else None,
        )
        _register(self)

    # running as the postgres user ------------------------------------------
    @staticmethod
    def _as_root() -> bool:
        return os.geteuid() == 0

    def _cmd(self, *args: str) -> list[str]:
        if not self._as_root():
            return list(args)
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", "postgres", "--", *args]

    def _run(self, *args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self._cmd(*args),
                cwd=self.base,  # pg tools complain about a cwd the postgres user can't enter
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(
                f"{Path(args[0]).name} timed out after {timeout} s; server log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            ) from exc

    def _server_options(self) -> str:
        return " ".join(
            [
                f"-p {self.port}",
                f"-k {shlex.quote(str(self.socket_dir))}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                f"-c max_connections={self.max_connections}",
            ]
        )

    def _initdb(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self.log_path.touch()
        if self._as_root():
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
            shutil.chown(self.log_path, "postgres", "postgres")
            check = subprocess.run(
                self._cmd("test", "-w", str(self.base)), check=False, stdin=subprocess.DEVNULL
            )
            if check.returncode != 0:
                raise ServiceError(
                    f"the postgres user cannot enter {self.base}; put TMPDIR somewhere it can "
                    "(e.g. TMPDIR=/tmp)"
                )
        initdb = str(self.bindir / "initdb")
        common = ["-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--no-sync"]
        done = self._run(initdb, *common, "--encoding=UTF8", "--locale=C.UTF-8")
        if done.returncode != 0:  # no C.UTF-8 locale on this system: fall back to C
            shutil.rmtree(self.data_dir, ignore_errors=True)
            done = self._run(initdb, *common, "--encoding=UTF8", "--locale=C")
        if done.returncode != 0:
            raise ServiceError(
                f"initdb failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        self._initialised = True

    def _pg_ctl(self, action: str, *extra: str) -> subprocess.CompletedProcess[str]:
        pg_ctl = str(self.bindir / "pg_ctl")
        return self._run(pg_ctl, action, "-D", str(self.data_dir), *extra)

    def _start_once(self) -> bool:
        done = self._pg_ctl(
            "start",
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-o",
            self._server_options(),
        )
        return done.returncode == 0

    def is_running(self) -> bool:
        return self._initialised and self._pg_ctl("status").returncode == 0

    def start(self) -> None:
        """Start the server (initdb first if needed) and wait until it accepts queries."""
        if self._closed:
            raise ServiceError("this PostgreSQL server was closed")
        if not self._initialised:
            self._initdb()
        attempts = 1 if (self._fixed_port or self._ever_started) else 3
        for attempt in range(attempts):
            if self._start_once():
                break
            port_taken = "could not bind" in self.log_path.read_text(errors="replace")
            if port_taken and attempt + 1 < attempts:  # lost a race for the free port
                self.port = free_port()
                self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
                continue
            raise ServiceError(
                f"PostgreSQL did not start on port {self.port}; log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )
        self._ever_started = True
        self._wait_for_queries()

    def _wait_for_queries(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.psql("postgres", "SELECT 1", timeout=10)
                return
            except ServiceError as exc:
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"PostgreSQL on port {self.port} does not answer queries: {exc}\n"
                        f"log {self.log_path}:\n{log_tail(self.log_path)}"
                    ) from exc
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast: ends sessions); the data stays for start()."""
        if not self._initialised or not self.is_running():
            return
        done = self._pg_ctl("stop", "-m", mode, "-w", "-t", str(int(STOP_TIMEOUT)))
        if done.returncode != 0:
            done = self._pg_ctl("stop", "-m", "immediate", "-w", "-t", str(int(STOP_TIMEOUT)))
        if done.returncode != 0:
            raise ServiceError(
                f"pg_ctl stop failed: {done.stderr.strip()}; log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )

    def restart(self) -> None:
        """pg_ctl restart (with -l, see the class docstring); same port, same data."""
        if not self._initialised:
            self.start()
            return
        done = self._pg_ctl(
            "restart",
            "-m",
            "fast",
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-o",
            self._server_options(),
        )
        if done.returncode != 0:
            raise ServiceError(
                f"pg_ctl restart failed: {done.stderr.strip()}; log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )
        self._wait_for_queries()

    def close(self) -> None:
        """Stop the server for good and delete its data."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._initialised:
                try:
                    self.stop()
                except ServiceError:
                    self._pg_ctl("stop", "-m", "immediate", "-w", "-t", str(int(STOP_TIMEOUT)))
            _kill_all(_processes_inside(self.base))
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            _unregister(self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------- child processes


class ProcessServer:
    """A server that is a direct child process, on a fixed port once chosen.

    ``stop()`` and ``start()`` keep the port (outage tests); ``close()`` also deletes
    the data folder.
    """

    name = "server"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._fixed_port = port is not None
        self._ever_started = False
        self.base = run_dir() / f"{self.name}-{uuid.uuid4().hex[:6]}"
        self.base.mkdir(parents=True)
        self.log_path = self.base / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        _register(self)

    # subclasses -----------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        return port_accepts(self.port)

    # lifecycle -------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            log.write(f"--- starting {self.name} on 127.0.0.1:{self.port}\n".encode())
            log.flush()
            return subprocess.Popen(
                [*_setpriv_prefix(), *self.command()],
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
            )

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and wait until it is ready; a no-op when it is running."""
        if self._closed:
            raise ServiceError(f"this {self.name} server was closed")
        if self.is_running():
            return
        if port_accepts(self.port) and (self._fixed_port or self._ever_started):
            raise ServiceError(f"cannot start {self.name}: port {self.port} is already in use")
        attempts = 1 if (self._fixed_port or self._ever_started) else 3
        for attempt in range(attempts):
            proc = self._spawn()
            self._proc = proc
            deadline = time.monotonic() + timeout
            while proc.poll() is None and not self.ready():
                if time.monotonic() > deadline:
                    self._terminate()
                    raise ServiceError(
                        f"{self.name} did not get ready on 127.0.0.1:{self.port} within "
                        f"{timeout} s; log {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                time.sleep(0.05)
            if proc.poll() is None:
                self._ever_started = True
                return
            self._proc = None
            if attempt + 1 < attempts:  # maybe lost a race for the free port: new port
                self.port = free_port()
                continue
            raise ServiceError(
                f"{self.name} exited with code {proc.returncode} while starting on "
                f"127.0.0.1:{self.port}; log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self._proc = None

    def stop(self) -> None:
        """Stop the server and wait until its port is closed; start() brings it back."""
        self._terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        while port_accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the server for good and delete its data."""
        if self._closed:
            return
        self._closed = True
        try:
            self._terminate()
            _kill_all(_processes_inside(self.base))
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            _unregister(self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def find_ferretdb() -> Path:
    """The FerretDB binary: $FERRETDB_BIN, else .cache/bin/ferretdb in the repository."""
    configured = os.environ.get("FERRETDB_BIN")
    # absolute: the server runs with its cwd in the run folder
    binary = Path(configured).absolute() if configured else DEFAULT_FERRETDB_BIN
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        source = "FERRETDB_BIN" if configured else "the default location"
        raise ServiceError(
            f"FerretDB binary not found at {binary} ({source}); run scripts/build_ferretdb.sh "
            "(scripts/test.sh does), or set TEST_MONGODB_URL to an existing MongoDB server"
        )
    return binary


FERRETDB_BACKENDS = ("postgresql", "sqlite")
FERRETDB_DATABASE = "ferretdb"  # the PostgreSQL database FerretDB keeps its data in


def ferretdb_backend() -> str:
    """The backend the harness runs FerretDB on: ``postgresql`` (the default, in a cluster
    of its own), or ``sqlite`` with ``TEST_FERRETDB_BACKEND=sqlite`` (to compare)."""
    backend = os.environ.get("TEST_FERRETDB_BACKEND", "postgresql")
    if backend not in FERRETDB_BACKENDS:
        raise ServiceError(
            f"TEST_FERRETDB_BACKEND={backend!r}: expected one of {', '.join(FERRETDB_BACKENDS)}"
        )
    return backend


class FerretDBServer(ProcessServer):
    """FerretDB 1.24.2: the MongoDB wire protocol on 127.0.0.1.

    On its PostgreSQL backend (the default, as shared/spec/test-services.md prescribes) it
    gets a PostgreSQL 15 cluster of its own (``.postgres``, a ``LocalPostgres`` on another
    port), so that stopping the MongoDB store in an outage test never stops the tracking
    database, and its load never slows the other cluster. Equality filters are pushed
    down to SQL there; on the SQLite backend (``backend="sqlite"``, kept to compare) every
    filter scans the collection in Go.

    ``start()`` starts the cluster when needed, then FerretDB, then checks that FerretDB
    reaches its backend (a query through it); a failure names what failed with the tail
    of its log. ``stop()``/``start()`` stop and restart FerretDB only, on the same port
    with the same data; ``close()`` stops both and deletes their data.
    """

    name = "ferretdb"

    def __init__(
        self, port: int | None = None, binary: Path | None = None, *, backend: str | None = None
    ) -> None:
        if binary is not None and not (binary.is_file() and os.access(binary, os.X_OK)):
            raise ServiceError(
                f"FerretDB binary not found at {binary}; run scripts/build_ferretdb.sh"
            )
        self.backend = backend or ferretdb_backend()
        if self.backend not in FERRETDB_BACKENDS:
            raise ServiceError(f"unknown FerretDB backend {self.backend!r}")
        self.binary = binary.absolute() if binary is not None else find_ferretdb()
        # Created (and registered for cleanup) first, so close_all() stops FerretDB first.
        self.postgres: LocalPostgres | None = None
        if self.backend == "postgresql":
            try:
                self.postgres = LocalPostgres(max_connections=50)
            except ServiceError as exc:
                raise ServiceError(
                    f"FerretDB's PostgreSQL backend needs a cluster of its own: {exc} (or "
                    "TEST_FERRETDB_BACKEND=sqlite, or TEST_MONGODB_URL for a MongoDB server)"
                ) from exc
        self._database_created = False
        super().__init__(port)
        self.data_dir = self.base / "data"
        self.data_dir.mkdir()

    @property
    def backend_url(self) -> str:
        """postgres://postgres@127.0.0.1:PORT2/ferretdb, or the SQLite folder's file: URL."""
        if self.postgres is None:
            return f"file:{self.data_dir}/"
        return f"postgres://postgres@127.0.0.1:{self.postgres.port}/{FERRETDB_DATABASE}"

    def command(self) -> list[str]:
        if self.postgres is None:
            backend = ["--handler=sqlite", f"--sqlite-url={self.backend_url}"]
        else:
            backend = ["--handler=postgresql", f"--postgresql-url={self.backend_url}"]
        return [
            str(self.binary),
            *backend,
            f"--state-dir={self.data_dir}",
            f"--listen-addr=127.0.0.1:{self.port}",
            "--debug-addr=-",
            "--telemetry=disable",
        ]

    def _start_backend(self) -> None:
        pg = self.postgres
        if pg is None or pg.is_running():
            return
        try:
            pg.start()
            if not self._database_created:
                pg.create_database(FERRETDB_DATABASE)
                self._database_created = True
        except ServiceError as exc:
            raise ServiceError(f"FerretDB's own PostgreSQL cluster did not start: {exc}") from exc

    def _check_backend(self) -> None:
        """One query through FerretDB that needs its backend; ServiceError with both logs."""
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        client: MongoClient[dict[str, object]] = MongoClient(
            self.url, serverSelectionTimeoutMS=int(START_TIMEOUT * 1000), connect=False
        )
        try:
            client["harness_probe"].list_collection_names()
        except PyMongoError as exc:
            logs = f"FerretDB log {self.log_path}:\n{log_tail(self.log_path)}"
            if self.postgres is not None:
                logs += (
                    f"\nits PostgreSQL log {self.postgres.log_path}:\n"
                    f"{log_tail(self.postgres.log_path)}"
                )
            self._terminate()
            raise ServiceError(
                f"FerretDB on 127.0.0.1:{self.port} listens but cannot use its {self.backend} "
                f"backend ({self.backend_url}): {type(exc).__name__}: {exc}\n{logs}"
            ) from exc
        finally:
            client.close()

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start FerretDB (and its cluster first, when it is not running) and wait until
        it answers a query that reaches its backend; a no-op when it is running."""
        if self._closed:
            raise ServiceError(f"this {self.name} server was closed")
        if self.is_running():
            return
        self._start_backend()
        super().start(timeout)
        self._check_backend()

    def close(self) -> None:
        """Stop FerretDB and its cluster for good and delete their data."""
        try:
            super().close()
        finally:
            if self.postgres is not None:
                self.postgres.close()

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"


def find_moto_server() -> list[str]:
    """moto_server from this interpreter's environment (the venv's bin folder)."""
    candidate = Path(sys.executable).parent / "moto_server"
    if candidate.is_file():
        return [str(candidate)]
    which = shutil.which("moto_server")
    if which:
        return [which]
    return [sys.executable, "-m", "moto.server"]


class MotoServer(ProcessServer):
    """moto's standalone S3 (any AWS) server; ``reset()`` empties all its state."""

    name = "moto"

    def command(self) -> list[str]:
        return [*find_moto_server(), "-H", "127.0.0.1", "-p", str(self.port)]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("AWS_ACCESS_KEY_ID", "testing")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return http_responds(f"{self.endpoint_url}/moto-api/")

    def reset(self) -> None:
        """POST /moto-api/reset: delete every bucket, object and version."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        try:
            with _no_proxy_opener().open(request, timeout=30) as response:
                status = response.status
        except (OSError, urllib.error.HTTPError) as exc:
            raise ServiceError(f"moto reset failed: {exc}; log {self.log_path}") from exc
        if status != 200:
            raise ServiceError(f"moto reset answered HTTP {status}; log {self.log_path}")


# ---------------------------------------------------------------------- Dovecot (IMAP)

DEFAULT_DOVECOT_BIN = "/usr/sbin/dovecot"
IMAP_USER = "privacy"

_DOVECOT_CONF = """\
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/run
log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:{base}/mail/%u
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={base}/mail/%u
}}
"""

_LIST_RE = re.compile(rb'^\((?P<flags>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.+)$')


def find_dovecot() -> Path:
    """The dovecot binary: $DOVECOT_BIN, else dovecot on PATH, else /usr/sbin/dovecot."""
    configured = os.environ.get("DOVECOT_BIN")
    candidates = [configured] if configured else [shutil.which("dovecot"), DEFAULT_DOVECOT_BIN]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate).absolute()
    source = f"DOVECOT_BIN={configured}" if configured else "PATH and /usr/sbin"
    raise ServiceError(
        f"dovecot not found ({source}); install the 'dovecot-imapd' package "
        "(scripts/test.sh does it as root) or set DOVECOT_BIN"
    )


def _imap_quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DovecotServer(ProcessServer):
    """Dovecot IMAP on 127.0.0.1, run as test-services.md says (root only: Dovecot runs
    its login processes as `dovenull` and the mail as `dovecot`), plus no delay after a
    failed login (Dovecot's default of 2 s only slows the tests down).

    Any user name logs in with ``password``; each user's mail is a maildir under the run
    folder. ``append``/``list_messages``/``folders``/``reset`` work over IMAP (imaplib), as
    the service under test does. ``stop()``/``start()`` keep the port and the mail.
    """

    name = "dovecot"

    def __init__(
        self, port: int | None = None, *, password: str | None = None, binary: Path | None = None
    ) -> None:
        if os.geteuid() != 0:
            raise ServiceError(
                "the Dovecot test server needs root: Dovecot refuses to run its login "
                "processes as the invoking user (see shared/spec/test-services.md)"
            )
        for user in ("dovecot", "dovenull"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                raise ServiceError(
                    f"system user {user!r} missing; install the 'dovecot-imapd' package"
                ) from None
        self.binary = binary.absolute() if binary is not None else find_dovecot()
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            raise ServiceError(f"dovecot binary not found at {self.binary}")
        super().__init__(port)
        self.password = password or f"imap-{uuid.uuid4().hex[:16]}"
        self.base.chmod(0o755)  # the dovecot and dovenull users must be able to enter it
        self.conf_path = self.base / "dovecot.conf"
        self.mail_dir = self.base / "mail"
        self.mail_dir.mkdir()
        shutil.chown(self.mail_dir, "dovecot", "dovecot")
        (self.base / "run").mkdir()

    def command(self) -> list[str]:
        # written at each start: the port may have changed after a lost race
        self.conf_path.write_text(
            _DOVECOT_CONF.format(
                base=self.base, log=self.log_path, port=self.port, password=self.password
            )
        )
        return [str(self.binary), "-F", "-c", str(self.conf_path)]

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                return sock.recv(64).startswith(b"* OK")
        except OSError:
            return False

    def url(self, user: str = IMAP_USER, folder: str = "INBOX", *, tls: str = "none") -> str:
        """imap://USER:PASSWORD@127.0.0.1:PORT/FOLDER?tls=none: this server has no TLS
        (``tls="starttls"``: the URL a deployment would use, which needs it)."""
        credentials = f"{quote(user, safe='')}:{quote(self.password, safe='')}"
        return f"imap://{credentials}@127.0.0.1:{self.port}/{quote(folder, safe='')}?tls={tls}"

    # IMAP -------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, user: str = IMAP_USER) -> Iterator[imaplib.IMAP4]:
        """A logged-in imaplib connection (logged out afterwards)."""
        try:
            imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        except OSError as exc:
            raise ServiceError(
                f"cannot reach Dovecot on 127.0.0.1:{self.port}: {exc}; log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            ) from exc
        try:
            imap.login(user, self.password)
            yield imap
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                imap.logout()

    @staticmethod
    def _check(what: str, typ: str, data: Sequence[object]) -> None:
        if typ != "OK":
            raise ServiceError(f"IMAP {what} failed: {typ} {data!r}")

    def append(self, raw: bytes, folder: str = "INBOX", user: str = IMAP_USER) -> None:
        """APPEND one message (bytes as they travel; bare LF become CRLF) to folder,
        creating the folder first when needed."""
        with self.session(user) as imap:
            if folder.upper() != "INBOX" and folder not in self._folders(imap):
                self._check("CREATE", *imap.create(_imap_quote(folder)))
            self._check("APPEND", *imap.append(_imap_quote(folder), None, None, raw))

    @staticmethod
    def _folders(imap: imaplib.IMAP4) -> list[str]:
        typ, data = imap.list()
        DovecotServer._check("LIST", typ, data)
        names: list[str] = []
        for line in data:
            match = _LIST_RE.match(line) if isinstance(line, bytes) else None
            if match is None:
                continue
            name = match.group("name").decode()
            if name.startswith('"') and name.endswith('"'):
                name = re.sub(r"\\(.)", r"\1", name[1:-1])
            names.append(name)
        return names

    def folders(self, user: str = IMAP_USER) -> list[str]:
        """The user's folder names (INBOX included), sorted."""
        with self.session(user) as imap:
            return sorted(self._folders(imap))

    def list_messages(self, folder: str = "INBOX", user: str = IMAP_USER) -> list[bytes]:
        """Every message of folder, as stored, in UID order; [] when it does not exist.
        Read-only: flags (\\Seen) are not changed."""
        with self.session(user) as imap:
            typ, data = imap.select(_imap_quote(folder), readonly=True)
            if typ != "OK":
                return []
            if data and data[0] in (b"0", None):
                return []
            typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
            self._check("FETCH", typ, data)
        found: list[tuple[int, bytes]] = []
        for item in data:
            if isinstance(item, tuple):
                uid = re.search(rb"UID (\d+)", item[0])
                found.append((int(uid.group(1)) if uid else 0, item[1]))
        return [message for _, message in sorted(found)]

    def reset(self, user: str = IMAP_USER) -> None:
        """Empty the user's mailbox: INBOX expunged, every other folder deleted."""
        with self.session(user) as imap:
            for name in sorted(self._folders(imap), key=len, reverse=True):
                if name.upper() == "INBOX":
                    typ, data = imap.select("INBOX")
                    self._check("SELECT", typ, data)
                    if data and data[0] not in (b"0", None):
                        self._check("STORE", *imap.store("1:*", "+FLAGS.SILENT", "(\\Deleted)"))
                        self._check("EXPUNGE", *imap.expunge())
                    imap.close()
                else:
                    self._check("DELETE", *imap.delete(_imap_quote(name)))


# ---------------------------------------------------------------- convenience


def start_postgres(
    *, bindir: str | None = None, port: int | None = None, max_connections: int = 200
) -> LocalPostgres:
    server = LocalPostgres(bindir=bindir, port=port, max_connections=max_connections)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def start_ferretdb(
    port: int | None = None, binary: Path | None = None, *, backend: str | None = None
) -> FerretDBServer:
    """FerretDB on ``backend`` (default: ``TEST_FERRETDB_BACKEND``, else ``postgresql``,
    in a PostgreSQL cluster of its own), started; closed again when its start fails."""
    server = FerretDBServer(port=port, binary=binary, backend=backend)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def start_moto(port: int | None = None) -> MotoServer:
    server = MotoServer(port=port)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def start_dovecot(port: int | None = None, *, password: str | None = None) -> DovecotServer:
    server = DovecotServer(port=port, password=password)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll predicate until it is true; ServiceError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ServiceError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
