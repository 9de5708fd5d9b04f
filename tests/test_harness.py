"""The test harness's servers work: real drivers over real sockets.

Each test talks to a server the harness started (or to the external one named by
TEST_POSTGRES_URL / TEST_MONGODB_URL / TEST_S3_ENDPOINT_URL).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest
from aiobotocore.session import get_session
from pymongo import AsyncMongoClient

from testsupport.harness.services import (
    FerretDBServer,
    FreshPgDatabase,
    PgDatabase,
    PostgresServer,
    ServiceError,
    ferretdb_backend,
    port_accepts,
    start_ferretdb,
    start_moto,
    start_postgres,
)
from testsupport.seed import TABLES

SOUNDOPS_TABLES = set(TABLES)

MongoClient = AsyncMongoClient[dict[str, Any]]


async def _public_tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
    finally:
        await conn.close()
    return {str(row["table_name"]) for row in rows}


# --- PostgreSQL -----------------------------------------------------------------------


async def test_soundops_schema_is_applied(
    pg_server: PostgresServer, target_postgres_dsn: str, target_postgres_url: str
) -> None:
    assert target_postgres_url.startswith("postgresql+asyncpg://")
    assert target_postgres_dsn.startswith("postgresql://")
    assert await _public_tables(target_postgres_dsn) == SOUNDOPS_TABLES

    db = target_postgres_dsn.rsplit("/", 1)[1]
    assert pg_server.psql(db, "SELECT count(*) FROM tenants") == "0"
    conn = await asyncpg.connect(target_postgres_dsn)
    try:
        version = await conn.fetchval("SHOW server_version_num")
    finally:
        await conn.close()
    if pg_server.local:
        assert str(version).startswith("15")


def test_psql_stops_at_the_first_error(
    pg_server: PostgresServer, fresh_pg_database: FreshPgDatabase, tmp_path: Path
) -> None:
    db = fresh_pg_database()
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE a (id int);\nSELECT no_such_column FROM a;\nCREATE TABLE b ();\n")
    with pytest.raises(ServiceError, match="no_such_column"):
        pg_server.psql_file(db.name, bad)
    # psql_file runs in one transaction: nothing of the failed file stays
    assert pg_server.psql(
        db.name, "SELECT count(*) FROM pg_tables WHERE tablename IN ('a','b')"
    ) == ("0")


async def test_fresh_databases_are_separate_and_dropped(
    pg_server: PostgresServer,
    fresh_pg_database: FreshPgDatabase,
    soundops_template_database: str,
) -> None:
    empty = fresh_pg_database()
    copy = fresh_pg_database(template=soundops_template_database)
    assert empty.name != copy.name
    assert empty.async_url.startswith("postgresql+asyncpg://")
    assert await _public_tables(empty.url) == set()
    assert await _public_tables(copy.url) == SOUNDOPS_TABLES

    conn = await asyncpg.connect(empty.url)
    try:
        await conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)")
        assert await conn.fetchval("SELECT sum(x) FROM t") == 3
    finally:
        await conn.close()

    pg_server.drop_database(empty.name)  # also what the fixture does at teardown
    assert not pg_server.database_exists(empty.name)
    assert pg_server.database_exists(copy.name)


@pytest.mark.slow
async def test_local_postgres_stop_start_restart_keep_port_and_data() -> None:
    if os.environ.get("TEST_POSTGRES_URL"):
        pytest.skip("TEST_POSTGRES_URL is set: the local PostgreSQL may not be installed")
    pg = start_postgres()
    try:
        dsn = pg.create_database("outage")
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        await conn.close()
        port = pg.port

        pg.stop()
        assert not port_accepts(port)
        with pytest.raises(OSError):
            await asyncpg.connect(dsn, timeout=5)

        pg.start()
        pg.restart()
        assert pg.port == port
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT x FROM t") == 42
        finally:
            await conn.close()
    finally:
        pg.close()
    assert not port_accepts(port)
    assert not pg.base.exists()


def test_database_helper_form(pg_server: PostgresServer) -> None:
    db: PgDatabase = pg_server.database("some_db")
    assert db.url.endswith("/some_db") and db.url.startswith("postgresql://")
    assert db.async_url == db.url.replace("postgresql://", "postgresql+asyncpg://", 1)


# --- MongoDB (FerretDB) ------------------------------------------------------------------


async def test_mongodb_insert_count_delete(mongodb_url: str) -> None:
    client: MongoClient = AsyncMongoClient(mongodb_url, serverSelectionTimeoutMS=10_000)
    db = client[f"harness_{uuid.uuid4().hex[:8]}"]
    try:
        messages = db["instagram_messages"]
        tenant = str(uuid.uuid4())
        other = str(uuid.uuid4())
        await messages.insert_many(
            [{"tenant_id": tenant, "text": f"hello {i}"} for i in range(3)]
            + [{"tenant_id": other, "text": "keep me"}]
        )
        assert await messages.count_documents({"tenant_id": tenant}) == 3

        result = await messages.delete_many({"tenant_id": tenant})
        assert result.deleted_count == 3
        assert await messages.count_documents({"tenant_id": tenant}) == 0
        assert await messages.count_documents({}) == 1
    finally:
        await client.drop_database(db.name)
        await client.close()


@pytest.mark.slow
async def test_ferretdb_stop_start_keeps_port_and_data() -> None:
    if os.environ.get("TEST_MONGODB_URL"):
        pytest.skip("TEST_MONGODB_URL is set: the FerretDB binary may not be built")
    server = start_ferretdb()
    try:
        port = server.port
        client: MongoClient = AsyncMongoClient(server.url, serverSelectionTimeoutMS=10_000)
        try:
            await client["soundops"]["instagram_comments"].insert_one({"text": "survives"})
        finally:
            await client.close()

        server.stop()
        # Checked at the socket level on purpose: an AsyncMongoClient closed while its
        # server is down can leak its monitor's connecting socket (pymongo 4.20 does not
        # close it on cancellation: PYTHON-5867), and with filterwarnings=error that
        # ResourceWarning fails whichever test happens to run the garbage collector.
        assert not port_accepts(port)

        server.start()
        assert server.port == port
        client = AsyncMongoClient(server.url, serverSelectionTimeoutMS=10_000)
        try:
            assert await client["soundops"]["instagram_comments"].count_documents({}) == 1
        finally:
            await client.close()
    finally:
        server.close()


def _needs_ferretdb_binary() -> None:
    if os.environ.get("TEST_MONGODB_URL"):
        pytest.skip("TEST_MONGODB_URL is set: the FerretDB binary may not be built")


def test_ferretdb_runs_on_postgresql_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TEST_FERRETDB_BACKEND", raising=False)
    assert ferretdb_backend() == "postgresql"
    monkeypatch.setenv("TEST_FERRETDB_BACKEND", "sqlite")
    assert ferretdb_backend() == "sqlite"
    monkeypatch.setenv("TEST_FERRETDB_BACKEND", "mysql")
    with pytest.raises(ServiceError, match="TEST_FERRETDB_BACKEND='mysql'"):
        ferretdb_backend()


@pytest.mark.slow
async def test_ferretdb_keeps_its_data_in_a_postgresql_cluster_of_its_own(
    pg_server: PostgresServer,
) -> None:
    _needs_ferretdb_binary()
    server = start_ferretdb(backend="postgresql")
    try:
        cluster = server.postgres
        assert cluster is not None and cluster.local
        assert cluster.admin_url != pg_server.admin_url
        assert f"--postgresql-url=postgres://postgres@127.0.0.1:{cluster.port}/ferretdb" in (
            server.command()
        )
        client: MongoClient = AsyncMongoClient(server.url, serverSelectionTimeoutMS=10_000)
        try:
            await client["harness_pg"]["instagram_messages"].insert_one({"tenant_id": "t"})
        finally:
            await client.close()
        # FerretDB keeps each MongoDB database as a schema of the `ferretdb` database.
        schemas = "SELECT count(*) FROM pg_namespace WHERE nspname = 'harness_pg'"
        assert cluster.psql("ferretdb", schemas) == "1"

        # The MongoDB store down (an outage test) leaves every PostgreSQL cluster up.
        server.stop()
        assert not port_accepts(server.port)
        assert cluster.is_running()
        assert pg_server.psql(pg_server.admin_database, "SELECT 1") == "1"
        server.start()
        client = AsyncMongoClient(server.url, serverSelectionTimeoutMS=10_000)
        try:
            assert await client["harness_pg"]["instagram_messages"].count_documents({}) == 1
        finally:
            await client.close()
    finally:
        server.close()
    assert not port_accepts(server.port)
    assert not port_accepts(cluster.port)
    assert not server.base.exists() and not cluster.base.exists()


@pytest.mark.slow
def test_ferretdb_that_cannot_use_its_database_says_so_with_both_log_tails() -> None:
    _needs_ferretdb_binary()
    server = start_ferretdb(backend="postgresql")
    try:
        assert server.postgres is not None
        server.stop()
        server.postgres.drop_database("ferretdb")  # what FerretDB is told to use is gone
        with pytest.raises(ServiceError) as failed:
            server.start()
        message = str(failed.value)
        assert "cannot use its postgresql backend" in message
        assert f"its PostgreSQL log {server.postgres.log_path}" in message
        assert str(server.log_path) in message
        assert not server.is_running()
    finally:
        server.close()


@pytest.mark.slow
def test_a_crashed_ferretdb_start_shows_its_log_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    fake = tmp_path / "ferretdb"
    fake.write_text("#!/bin/sh\necho 'fake ferretdb: cannot open the backend' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = FerretDBServer(binary=fake, backend="postgresql")
    try:
        with pytest.raises(ServiceError, match=r"(?s)exited with code 3.*cannot open the backend"):
            server.start()
    finally:
        server.close()
    assert server.postgres is not None
    assert not port_accepts(server.postgres.port)
    assert not server.postgres.base.exists()


def test_missing_ferretdb_binary_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match=r"scripts/build_ferretdb\.sh"):
        FerretDBServer(binary=tmp_path / "no-ferretdb")


# --- S3 (moto) -----------------------------------------------------------------------


async def test_s3_versioned_bucket_keeps_both_versions(s3_endpoint_url: str) -> None:
    bucket = f"harness-{uuid.uuid4().hex[:12]}"
    key = "tenants/t1/uploads/song.mp3"
    session = get_session()
    async with session.create_client(
        "s3", endpoint_url=s3_endpoint_url, region_name="us-east-1"
    ) as s3:
        await s3.create_bucket(Bucket=bucket)
        try:
            await s3.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
            )
            first = await s3.put_object(Bucket=bucket, Key=key, Body=b"take 1")
            second = await s3.put_object(Bucket=bucket, Key=key, Body=b"take 2")
            assert first["VersionId"] != second["VersionId"]

            listing = await s3.list_object_versions(Bucket=bucket, Prefix="tenants/t1/")
            versions = listing["Versions"]
            assert {v["VersionId"] for v in versions} == {first["VersionId"], second["VersionId"]}
            assert [v["VersionId"] for v in versions if v["IsLatest"]] == [second["VersionId"]]

            old = await s3.get_object(Bucket=bucket, Key=key, VersionId=first["VersionId"])
            async with old["Body"] as body:
                assert await body.read() == b"take 1"
        finally:
            listing = await s3.list_object_versions(Bucket=bucket)
            for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
                await s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
            await s3.delete_bucket(Bucket=bucket)


@pytest.mark.slow
@pytest.mark.usefixtures("aws_test_credentials")
async def test_moto_reset_and_stop_start() -> None:
    # its own moto server, so that resetting does not wipe other tests' buckets
    if os.environ.get("TEST_S3_ENDPOINT_URL"):
        pytest.skip("TEST_S3_ENDPOINT_URL is set")
    moto = start_moto()
    try:
        session = get_session()
        async with session.create_client(
            "s3", endpoint_url=moto.endpoint_url, region_name="us-east-1"
        ) as s3:
            await s3.create_bucket(Bucket="soundops-media")
            assert [b["Name"] for b in (await s3.list_buckets())["Buckets"]] == ["soundops-media"]
            moto.reset()
            assert (await s3.list_buckets())["Buckets"] == []

            port = moto.port
            moto.stop()
            assert not port_accepts(port)
            moto.start()
            assert moto.port == port
            assert (await s3.list_buckets())["Buckets"] == []
    finally:
        moto.close()
