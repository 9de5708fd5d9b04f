# ================================================================================
# TEST HARNESS: real servers (PostgreSQL 15, FerretDB, moto S3, Dovecot IMAP) -- BEGIN
#
# Session-scoped and lazy: a server starts only when a test asks for one of its
# fixtures, on a free 127.0.0.1 port, and stops at the end of the session
# (testsupport/harness/services.py). FerretDB runs on its PostgreSQL backend in a
# PostgreSQL cluster of its own (not pg_server's), started and stopped with it.
# Environment overrides, to use an existing server:
#   TEST_POSTGRES_URL     postgresql://user:pw@host:port/db (user may CREATE DATABASE)
#   TEST_MONGODB_URL      mongodb://host:port/  (then no FerretDB and no cluster of its own)
#   TEST_S3_ENDPOINT_URL  http://host:port (AWS credentials come from the environment)
#   TEST_FERRETDB_BACKEND sqlite: FerretDB on its SQLite backend instead (to compare)
# Application fixtures go below the END marker of this section.
# ================================================================================
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport.harness.services import (
    DovecotServer,
    FerretDBServer,
    FreshPgDatabase,
    MotoServer,
    PgDatabase,
    PostgresServer,
    start_dovecot,
    start_ferretdb,
    start_moto,
    start_postgres,
)

TESTS_DIR = Path(__file__).resolve().parent
SOUNDOPS_SCHEMA = TESTS_DIR / "data" / "soundops_schema.sql"
SOUNDOPS_DB = "soundops"


def _keep_loopback_off_proxies() -> None:
    """An HTTP(S)_PROXY from the environment must not catch 127.0.0.1 traffic."""
    if not any(
        os.environ.get(v) for v in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
    ):
        return
    for var in ("NO_PROXY", "no_proxy"):
        current = [h for h in os.environ.get(var, "").split(",") if h]
        os.environ[var] = ",".join([*current, "127.0.0.1", "localhost"])


_keep_loopback_off_proxies()


# --- PostgreSQL -----------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The test PostgreSQL server: a local PostgreSQL 15 (LocalPostgres, `.local` True,
    with stop/start/restart) or, with TEST_POSTGRES_URL, that server (`.local` False).
    Methods: url(db), async_url(db), database(db), create_database(name, template=None),
    drop_database(name), database_exists(name), psql(db, sql), psql_file(db, path)."""
    external = os.environ.get("TEST_POSTGRES_URL")
    if external:
        yield PostgresServer(external)
        return
    server = start_postgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_admin_url(pg_server: PostgresServer) -> str:
    """postgresql:// URL of the server's admin database (may CREATE DATABASE)."""
    return pg_server.admin_url


@pytest.fixture(scope="session")
def soundops_database(pg_server: PostgresServer) -> Iterator[PgDatabase]:
    """The SoundOps main database: tests/data/soundops_schema.sql applied once, no rows.
    Named `soundops` on the local server; a unique `soundops_test_*` name (dropped at
    the end) on an external one, so a real `soundops` there is never touched."""
    name = SOUNDOPS_DB if pg_server.local else pg_server.unique_database_name("soundops_test")
    pg_server.create_database(name)
    try:
        pg_server.psql_file(name, SOUNDOPS_SCHEMA)
        yield pg_server.database(name)
    finally:
        if not pg_server.local:
            pg_server.drop_database(name)


@pytest.fixture(scope="session")
def target_postgres_url(soundops_database: PgDatabase) -> str:
    """postgresql+asyncpg:// URL of the SoundOps database (SQLAlchemy form)."""
    return soundops_database.async_url


@pytest.fixture(scope="session")
def target_postgres_dsn(soundops_database: PgDatabase) -> str:
    """postgresql:// URL of the SoundOps database (psql / asyncpg.connect form)."""
    return soundops_database.url


@pytest.fixture(scope="session")
def soundops_template_database(pg_server: PostgresServer) -> Iterator[str]:
    """Name of a schema-only SoundOps database that nothing connects to, to be used as
    `fresh_pg_database(template=...)`: a private, empty SoundOps DB per test."""
    name = pg_server.unique_database_name("soundops_template")
    pg_server.create_database(name)
    try:
        pg_server.psql_file(name, SOUNDOPS_SCHEMA)
        yield name
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def fresh_pg_database(pg_server: PostgresServer) -> Iterator[FreshPgDatabase]:
    """Factory: each call creates a new database with a unique name (empty, or a copy of
    `template`) and returns its PgDatabase(name, url, async_url); all are dropped
    (WITH (FORCE)) when the test ends."""
    created: list[str] = []

    def make(template: str | None = None, *, prefix: str = "test") -> PgDatabase:
        name = pg_server.unique_database_name(prefix)
        pg_server.create_database(name, template=template)
        created.append(name)
        return pg_server.database(name)

    yield make
    for name in reversed(created):
        pg_server.drop_database(name)


@pytest.fixture
def soundops_db(fresh_pg_database: FreshPgDatabase, soundops_template_database: str) -> str:
    """The URL of a private, empty SoundOps database (schema only) for one test."""
    return fresh_pg_database(soundops_template_database, prefix="soundops").url


# --- MongoDB (FerretDB) ------------------------------------------------------------


@pytest.fixture(scope="session")
def _ferretdb() -> Iterator[FerretDBServer | None]:
    if os.environ.get("TEST_MONGODB_URL"):
        yield None
        return
    server = start_ferretdb()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def ferretdb_server(_ferretdb: FerretDBServer | None) -> FerretDBServer:
    """The local FerretDB (stop()/start() on the same port, for outage tests: they stop
    FerretDB only, its cluster `.postgres` keeps running); skips the test when
    TEST_MONGODB_URL points at an external server."""
    if _ferretdb is None:
        pytest.skip("TEST_MONGODB_URL is set: no local FerretDB to control")
    return _ferretdb


@pytest.fixture(scope="session")
def mongodb_url(_ferretdb: FerretDBServer | None) -> str:
    """mongodb://127.0.0.1:PORT/ of the local FerretDB, or TEST_MONGODB_URL."""
    if _ferretdb is None:
        return os.environ["TEST_MONGODB_URL"]
    return _ferretdb.url


# --- S3 (moto) ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def aws_test_credentials() -> Iterator[None]:
    """Fake AWS credentials and region in os.environ for the session (for moto)."""
    env = pytest.MonkeyPatch()
    env.setenv("AWS_ACCESS_KEY_ID", "testing")
    env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
        env.delenv(var, raising=False)
    try:
        yield
    finally:
        env.undo()


@pytest.fixture(scope="session")
def _moto(request: pytest.FixtureRequest) -> Iterator[MotoServer | None]:
    if os.environ.get("TEST_S3_ENDPOINT_URL"):
        yield None
        return
    request.getfixturevalue("aws_test_credentials")
    server = start_moto()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def moto_server(_moto: MotoServer | None) -> MotoServer:
    """The local moto server (reset(), stop()/start() on the same port);
    skips the test when TEST_S3_ENDPOINT_URL points at an external S3."""
    if _moto is None:
        pytest.skip("TEST_S3_ENDPOINT_URL is set: no local moto server to control")
    return _moto


@pytest.fixture(scope="session")
def s3_endpoint_url(_moto: MotoServer | None) -> str:
    """http://127.0.0.1:PORT of moto (fake AWS credentials set for the session),
    or TEST_S3_ENDPOINT_URL."""
    if _moto is None:
        return os.environ["TEST_S3_ENDPOINT_URL"]
    return _moto.endpoint_url


# --- IMAP (Dovecot) ------------------------------------------------------------------


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[DovecotServer]:
    """A local Dovecot IMAP server (root only): any user name logs in with `.password`.
    Methods: url(user="privacy") -> imap://privacy:PASSWORD@127.0.0.1:PORT/INBOX?tls=none,
    append(raw, folder="INBOX", user=...), list_messages(folder="INBOX", user=...),
    folders(user=...), reset(user=...), session(user) (a logged-in imaplib.IMAP4),
    stop()/start() on the same port."""
    server = start_dovecot()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def imap_mailbox(dovecot_server: DovecotServer) -> str:
    """The `privacy` user's mailbox, emptied (INBOX expunged, other folders deleted):
    its imap://privacy:PASSWORD@127.0.0.1:PORT/INBOX?tls=none URL (no TLS on this server)."""
    dovecot_server.reset("privacy")
    return dovecot_server.url("privacy")


# ================================================================================
# TEST HARNESS -- END. Application fixtures go below this line.
# ================================================================================

from tests.app_fixtures import (  # noqa: E402, F401  (fixtures of the service itself)
    app,
    auth,
    client,
    empty_tracking_url,
    settings,
    settings_overrides,
    state,
    tracking_template,
    tracking_url,
)
