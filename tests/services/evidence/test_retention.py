"""Retention guarantees on the real test servers: moto (S3) and FerretDB (MongoDB).

FerretDB 1.24 cannot have TTL indexes (it answers code 238 NotImplemented), so the
MongoDB ``ok``/``wrong`` judgement is tested on ``listIndexes`` documents, and on the
server the tests assert the ``unsupported`` report. moto stores lifecycle
configurations without ever executing them: the tests read back what was stored.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiobotocore.session import get_session
from pymongo import AsyncMongoClient
from typer.testing import CliRunner

from app import db
from app.cli import cli
from app.retention_status import RetentionStatus, RetentionStore
from app.services.evidence import retention
from app.services.evidence.retention import (
    RetentionItem,
    RetentionReport,
)
from app.services.evidence.retention.mongodb import PROBE_COLLECTION, TtlRule, judge_ttl
from app.settings import Settings, get_settings
from app.stores import Stores, open_stores
from tests.app_fixtures import make_settings
from testsupport.harness.services import FerretDBServer, MotoServer

BUCKET = "soundops-ig-cache"
OUR_RULE = "soundops-deletion-retention"
MARKER_RULE = "soundops-deletion-expired-delete-markers"
OTHER_RULE = {
    "ID": "exports-7d",
    "Filter": {"Prefix": "exports/"},
    "Status": "Enabled",
    "Expiration": {"Days": 7},
}


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def tracking_url(tmp_path: Path) -> str:
    """The tracking store plays no part in retention: SQLite only (overrides the fixture
    that runs every test on both backends)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'tracking.db'}"
    db.upgrade_sync(url)
    return url


@pytest.fixture
def mongo_database() -> str:
    return f"retention_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings_overrides(
    mongodb_url: str, s3_endpoint_url: str, mongo_database: str
) -> dict[str, Any]:
    """The app of these tests (``settings``, ``client``) sees FerretDB and moto."""
    return {
        "mongodb_url": mongodb_url,
        "mongodb_database": mongo_database,
        "s3_endpoint_url": s3_endpoint_url,
    }


@pytest.fixture
async def mongo(mongodb_url: str, mongo_database: str) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url, tz_aware=True)
    yield client[mongo_database]
    await client.drop_database(mongo_database)
    await client.close()


@pytest.fixture
async def s3(s3_endpoint_url: str, moto_server: MotoServer) -> AsyncIterator[Any]:
    """A client of an empty moto."""
    moto_server.reset()
    async with get_session().create_client(
        "s3", endpoint_url=s3_endpoint_url, region_name="us-east-1"
    ) as client:
        yield client


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Stores]:
    stores = await open_stores(settings)
    try:
        yield stores
    finally:
        await stores.aclose()


def item(report: RetentionReport, name: str) -> RetentionItem:
    (found,) = [i for i in report.items if i.name == name or i.name.endswith(f".{name}")]
    return found


async def rules_of(s3: Any) -> dict[str, dict[str, Any]]:
    response = await s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)
    return {rule["ID"]: rule for rule in response["Rules"]}


# --- S3 lifecycle (moto) -------------------------------------------------------------------


async def test_a_bucket_without_the_rule_is_missing_and_apply_creates_it(
    settings: Settings, s3: Any
) -> None:
    await s3.create_bucket(Bucket=BUCKET)
    async with opened(settings) as stores:
        before = await retention.check(stores, settings)
        applied = await retention.apply(stores, settings)
        again = await retention.apply(stores, settings)

    assert item(before, BUCKET).status is RetentionStatus.missing
    assert item(before, BUCKET).found == "no lifecycle rules"
    assert not before.ok
    assert item(applied, BUCKET).status is RetentionStatus.ok
    assert f"added rule {OUR_RULE}" in (item(applied, BUCKET).action or "")
    rules = await rules_of(s3)
    assert rules[OUR_RULE]["Status"] == "Enabled"
    assert rules[OUR_RULE]["Filter"] == {"Prefix": ""}
    assert rules[OUR_RULE]["Expiration"] == {"Days": 30}
    assert rules[OUR_RULE]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    assert rules[MARKER_RULE]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    # An applied bucket is left alone.
    assert item(again, BUCKET).status is RetentionStatus.ok
    assert item(again, BUCKET).action is None
    assert await rules_of(s3) == rules


async def test_a_sixty_day_rule_is_wrong_and_apply_keeps_the_rule_of_another_prefix(
    settings: Settings, s3: Any
) -> None:
    await s3.create_bucket(Bucket=BUCKET)
    sixty = {
        "ID": "cache-60d",
        "Filter": {"Prefix": ""},
        "Status": "Enabled",
        "Expiration": {"Days": 60},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3},
    }
    await s3.put_bucket_lifecycle_configuration(
        Bucket=BUCKET, LifecycleConfiguration={"Rules": [sixty, OTHER_RULE]}
    )
    async with opened(settings) as stores:
        before = await retention.check(stores, settings)
        applied = await retention.apply(stores, settings)

    wrong = item(before, BUCKET)
    assert wrong.status is RetentionStatus.wrong
    assert "cache-60d: current objects expire after 60 days" in (wrong.found or "")
    assert wrong.detail == "objects expire after 60 days, not 30"
    # Other rules are counted, their prefixes (which may hold ids) are not shown.
    assert "1 rule(s) on other prefixes or filters" in (wrong.found or "")
    assert "exports/" not in (wrong.found or "")
    assert item(applied, BUCKET).status is RetentionStatus.ok
    assert "cache-60d: current objects now expire after 30 days (was 60 days)" in (
        item(applied, BUCKET).action or ""
    )
    rules = await rules_of(s3)
    assert rules["exports-7d"] == OTHER_RULE
    assert rules["cache-60d"]["Expiration"] == {"Days": 30}
    assert rules["cache-60d"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}
    assert OUR_RULE not in rules  # the existing whole-bucket rule was fixed, not doubled
    assert all(r.get("Expiration", {}).get("Days") != 60 for r in rules.values())


async def test_a_versioned_bucket_also_needs_noncurrent_versions_to_expire(
    settings: Settings, s3: Any
) -> None:
    await s3.create_bucket(Bucket=BUCKET)
    await s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    thirty = {"ID": "cache-30d", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 30}}
    await s3.put_bucket_lifecycle_configuration(
        Bucket=BUCKET, LifecycleConfiguration={"Rules": [thirty]}
    )
    async with opened(settings) as stores:
        before = await retention.check(stores, settings)
        applied = await retention.apply(stores, settings)

    assert item(before, BUCKET).status is RetentionStatus.wrong
    assert "noncurrent versions do not expire" in (item(before, BUCKET).detail or "")
    assert item(applied, BUCKET).status is RetentionStatus.ok
    rules = await rules_of(s3)
    assert rules["cache-30d"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    assert rules[MARKER_RULE]["Expiration"] == {"ExpiredObjectDeleteMarker": True}


async def test_a_bucket_that_does_not_exist_is_missing_and_not_created(
    settings: Settings, s3: Any
) -> None:
    async with opened(settings) as stores:
        applied = await retention.apply(stores, settings)

    assert item(applied, BUCKET).status is RetentionStatus.missing
    assert item(applied, BUCKET).found == "bucket does not exist"
    assert item(applied, BUCKET).action == "not changed: the bucket does not exist"
    assert (await s3.list_buckets())["Buckets"] == []


@pytest.mark.slow  # three checks against a refused port: botocore retries each
async def test_s3_down_is_unreachable_with_the_error_class_only(
    settings: Settings, moto_server: MotoServer, mongo: Any
) -> None:
    async with opened(settings) as stores:
        moto_server.stop()
        try:
            checked = await retention.check(stores, settings)
            applied = await retention.apply(stores, settings)
        finally:
            moto_server.start()  # moto keeps no state across a restart; other tests reset it

    for report in (checked, applied):
        down = item(report, BUCKET)
        assert down.status is RetentionStatus.unreachable
        assert down.detail is not None and re.fullmatch(r"[A-Za-z]+", down.detail), down.detail
        assert not report.ok
        # MongoDB is judged on its own.
        assert item(report, "instagram_messages").status is not RetentionStatus.unreachable


# --- MongoDB TTL (FerretDB, and listIndexes documents) --------------------------------------


async def test_ferretdb_ttl_is_reported_unsupported_and_apply_does_not_raise(
    settings: Settings, mongo: Any, ferretdb_server: FerretDBServer
) -> None:
    # What SoundOps can have on FerretDB: a plain index on created_at, no TTL.
    await mongo["instagram_messages"].insert_one({"created_at": datetime.now(UTC)})
    await mongo["instagram_messages"].create_index("created_at")
    async with opened(settings) as stores:
        checked = await retention.check(stores, settings)
        applied = await retention.apply(stores, settings)

    messages, comments = item(checked, "instagram_messages"), item(checked, "instagram_comments")
    assert messages.found == "index created_at_1 without expireAfterSeconds (expires nothing)"
    assert comments.found == "collection does not exist"
    for report in (checked, applied):
        for name in ("instagram_messages", "instagram_comments"):
            ttl = item(report, name)
            assert ttl.store is RetentionStore.mongodb
            assert ttl.status is RetentionStatus.unsupported
            assert ttl.detail is not None
            assert ttl.detail.startswith("unsupported by this server: ")
            assert ttl.detail.endswith("(code 238 NotImplemented)")
    # apply tried the real commands and kept the server's answers.
    assert item(applied, "instagram_messages").action == (
        "collMod refused: unsupported by this server: "
        "`collMod` command is not implemented yet (code 238 NotImplemented)"
    )
    assert item(applied, "instagram_comments").action == (
        "createIndexes refused: unsupported by this server: "
        'Index option "expireAfterSeconds" is not implemented yet (code 238 NotImplemented)'
    )
    # The probe leaves nothing behind, and an unsupported TTL does not fail the report.
    assert PROBE_COLLECTION not in await mongo.list_collection_names()
    assert all(
        i.status is not RetentionStatus.missing for i in checked.items if i.store == "mongodb"
    )


RULE = TtlRule("instagram_messages")
ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}


@pytest.mark.parametrize(
    ("indexes", "status", "found"),
    [
        (
            [ID_INDEX, {"key": {"created_at": 1}, "name": "ttl", "expireAfterSeconds": 2592000}],
            RetentionStatus.ok,
            "index ttl, expireAfterSeconds=2592000",
        ),
        (
            [ID_INDEX, {"key": {"created_at": -1}, "name": "c", "expireAfterSeconds": 5184000}],
            RetentionStatus.wrong,
            "index c, expireAfterSeconds=5184000",
        ),
        (
            [
                ID_INDEX,
                {
                    "key": {"created_at": 1},
                    "name": "p",
                    "expireAfterSeconds": 2592000,
                    "partialFilterExpression": {"tenant_id": "x"},
                },
            ],
            RetentionStatus.wrong,
            "index p, expireAfterSeconds=2592000, only for a partialFilterExpression",
        ),
        (
            [ID_INDEX, {"key": {"created_at": 1, "tenant_id": 1}, "name": "compound"}],
            None,
            "no index on created_at",
        ),
        (
            [
                ID_INDEX,
                {"key": {"created_at": 1}, "name": "plain"},
                {"key": {"created_at": 1}, "name": "ttl", "expireAfterSeconds": 2592000},
            ],
            RetentionStatus.ok,
            "index ttl, expireAfterSeconds=2592000",
        ),
    ],
)
def test_ttl_indexes_are_judged_from_list_indexes(
    indexes: list[dict[str, Any]], status: RetentionStatus | None, found: str
) -> None:
    assert judge_ttl(RULE, indexes) == (status, found)


# --- not configured ------------------------------------------------------------------------


async def test_stores_that_are_not_configured_are_reported_as_such(tracking_url: str) -> None:
    settings = make_settings(tracking_url)
    async with opened(settings) as stores:
        checked = await retention.check(stores, settings)
        applied = await retention.apply(stores, settings)

    for report in (checked, applied):
        assert [(i.name, i.status) for i in report.items] == [
            ("soundops.instagram_messages", RetentionStatus.not_configured),
            ("soundops.instagram_comments", RetentionStatus.not_configured),
            (BUCKET, RetentionStatus.not_configured),
        ]
        assert all(i.action is None for i in report.items)
        assert report.ok


# --- the API -------------------------------------------------------------------------------


async def test_the_endpoint_returns_the_report_with_read_scope(
    client: httpx.AsyncClient,
    auth: Callable[..., dict[str, str]],
    s3: Any,
    mongo: Any,
    mongo_database: str,
) -> None:
    await s3.create_bucket(Bucket=BUCKET)

    response = await client.get("/v1/retention", headers=auth("deletions:read"))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is False
    statuses = {i["name"]: i["status"] for i in body["items"]}
    assert statuses == {
        f"{mongo_database}.instagram_messages": "unsupported",
        f"{mongo_database}.instagram_comments": "unsupported",
        BUCKET: "missing",
    }
    messages = body["items"][0]
    assert messages["store"] == "mongodb"
    assert messages["expected"] == ("TTL index on created_at, expireAfterSeconds=2592000 (30 days)")
    assert "unsupported by this server" in messages["detail"]


async def test_the_endpoint_needs_the_read_scope(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
) -> None:
    forbidden = await client.get("/v1/retention", headers=auth("deletions:write"))
    anonymous = await client.get("/v1/retention")

    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == "application/problem+json"
    assert anonymous.status_code == 401


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    mongodb_url: str,
    s3_endpoint_url: str,
    mongo_database: str,
) -> Iterator[None]:
    env = {
        "DELETION_ENVIRONMENT": "development",
        "DELETION_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "DELETION_MONGODB_URL": mongodb_url,
        "DELETION_MONGODB_DATABASE": mongo_database,
        "DELETION_S3_ENDPOINT_URL": s3_endpoint_url,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def run_cli(*args: str) -> tuple[int, str]:
    # The CLI runs its own event loop: give it a thread.
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["retention", *args], env={"COLUMNS": "200"}
    )
    return result.exit_code, result.output


async def test_cli_check_fails_on_a_missing_rule_and_passes_after_apply(
    cli_env: None, s3: Any, mongo: Any
) -> None:
    await s3.create_bucket(Bucket=BUCKET)

    missing_code, missing_out = await run_cli("check")
    apply_code, apply_out = await run_cli("apply")
    ok_code, ok_out = await run_cli("check")

    assert missing_code == 1, missing_out
    assert re.search(rf"{BUCKET}\s.*missing", missing_out)
    assert apply_code == 0, apply_out
    assert f"added rule {OUR_RULE}" in apply_out
    # An unsupported TTL is printed clearly and does not fail the check.
    assert ok_code == 0, ok_out
    assert "instagram_messages detail: unsupported by this server: " in ok_out
    assert "retention rules in place" in ok_out


async def test_cli_check_prints_stores_that_are_not_configured_and_fails_having_checked_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DELETION_ENVIRONMENT", "development")
    monkeypatch.setenv("DELETION_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("DELETION_MONGODB_URL", raising=False)
    monkeypatch.setenv("DELETION_S3_ENABLED", "false")  # the session's AWS keys would enable it
    get_settings.cache_clear()
    try:
        code, out = await run_cli("check")
    finally:
        get_settings.cache_clear()

    # Nothing was checked: that proves nothing, so it must not pass.
    assert code == 1, out
    assert "nothing was checked" in out
    assert out.count("not_configured") == 3
    assert "MongoDB is not configured (DELETION_MONGODB_URL)" in out
    assert "S3 is not configured" in out


@pytest.mark.slow  # botocore retries a refused connection
async def test_cli_check_exits_1_when_s3_is_unreachable(
    cli_env: None, moto_server: MotoServer, mongo: Any
) -> None:
    moto_server.stop()
    try:
        code, out = await run_cli("check")
    finally:
        moto_server.start()

    assert code == 1, out
    assert re.search(rf"{BUCKET}\s.*unreachable", out)
    assert f"{BUCKET} detail: EndpointConnectionError" in out
    assert "Traceback" not in out
