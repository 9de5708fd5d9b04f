"""Retention that enforces itself (#16 item 2), on the real test servers: FerretDB refuses
TTL indexes, so the worker sweeps; moto stores lifecycle rules (and never runs them), so
the worker applies a missing one, and sweeps itself only when DELETION_RETENTION_SWEEP
says so. The clock of a pass is given (``run(now=...)``): nothing is patched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from app import repository
from app.db import create_engine, create_sessionmaker
from app.retention_status import RetentionMode, RetentionStore
from app.services.evidence.retention.enforce import LEASE, RetentionEnforcer, RetentionPass
from app.settings import Settings
from app.stores import Stores, open_stores
from tests.services.evidence import test_retention as base
from tests.services.evidence.test_retention import BUCKET, OUR_RULE, rules_of

# The fixtures of the retention checks' tests: FerretDB and moto, SQLite tracking store.
cli_env = base.cli_env
mongo = base.mongo
mongo_database = base.mongo_database
s3 = base.s3
tracking_url = base.tracking_url

WINDOW = timedelta(days=30)
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
COLLECTIONS = ("instagram_messages", "instagram_comments")


@pytest.fixture
def settings_overrides(
    request: pytest.FixtureRequest, mongodb_url: str, s3_endpoint_url: str, mongo_database: str
) -> dict[str, Any]:
    """FerretDB and moto, and what a test's ``@pytest.mark.settings`` adds."""
    marker = request.node.get_closest_marker("settings")
    return {
        "mongodb_url": mongodb_url,
        "mongodb_database": mongo_database,
        "s3_endpoint_url": s3_endpoint_url,
        **(marker.kwargs if marker else {}),
    }


@pytest.fixture
async def stores(settings: Settings) -> AsyncIterator[Stores]:
    opened = await open_stores(settings)
    yield opened
    await opened.aclose()


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[Any]:
    engine = create_engine(settings.database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def enforcer(settings: Settings, stores: Stores, sessions: Any, owner: str = "w1") -> Any:
    return RetentionEnforcer(settings, stores, sessions, owner)


def sample(name: str, store: str, location: str) -> float:
    value = REGISTRY.get_sample_value(name, {"store": store, "location": location})
    return value or 0.0


def outcome(done: RetentionPass, location: str) -> Any:
    (found,) = [o for o in done.outcomes if o.location.endswith(location)]
    return found


async def seed(mongo: Any) -> dict[str, list[str]]:
    """Per collection: tenant A and B, expired and young, the boundaries one minute either
    side of the window. Returns the texts that must stay."""
    ages = {
        "a-old-31d": timedelta(days=31),
        "a-old-1min": WINDOW + timedelta(minutes=1),
        "a-young-1min": WINDOW - timedelta(minutes=1),
        "b-young-1d": timedelta(days=1),
        "b-old-400d": timedelta(days=400),
        "b-young-now": timedelta(0),
    }
    for name in COLLECTIONS:
        await mongo[name].insert_many(
            [
                {"tenant_id": text[0], "text": text, "created_at": NOW - age}
                for text, age in ages.items()
            ]
        )
    return {name: sorted(t for t in ages if "young" in t) for name in COLLECTIONS}


async def texts(mongo: Any, name: str) -> list[str]:
    return sorted(d["text"] for d in await mongo[name].find({}).to_list())


# --- MongoDB on FerretDB: refuses the TTL index, so the worker sweeps -------------------


async def test_ferretdb_refuses_ttl_so_the_worker_sweeps_only_what_expired(
    settings: Settings, stores: Stores, sessions: Any, mongo: Any
) -> None:
    kept = await seed(mongo)
    # Another collection of the same database, with old documents: never touched.
    await mongo["instagram_accounts"].insert_one({"text": "old", "created_at": NOW - 2 * WINDOW})
    swept_before = {
        n: sample("deletion_retention_swept_total", "mongodb", f"{mongo.name}.{n}")
        for n in COLLECTIONS
    }

    done = await enforcer(settings, stores, sessions).run(now=NOW)

    assert done is not None
    for name in COLLECTIONS:
        result = outcome(done, name)
        assert result.mode is RetentionMode.sweep
        assert result.reason == "the server refuses the TTL index"
        assert result.error is None
        assert result.swept == 3
        assert await texts(mongo, name) == kept[name]
        # The oldest left is the one a minute inside the window.
        assert result.oldest_seconds == (WINDOW - timedelta(minutes=1)).total_seconds()
        location = f"{mongo.name}.{name}"
        assert sample("deletion_retention_swept_total", "mongodb", location) == (
            swept_before[name] + 3
        )
        assert sample("deletion_retention_oldest_seconds", "mongodb", location) == (
            result.oldest_seconds
        )
    assert await mongo["instagram_accounts"].count_documents({}) == 1


async def test_a_second_pass_finds_nothing_more_and_young_documents_stay(
    settings: Settings, stores: Stores, sessions: Any, mongo: Any
) -> None:
    kept = await seed(mongo)
    first = await enforcer(settings, stores, sessions).run(now=NOW)
    # A minute later the boundary document is still inside the window.
    again = await enforcer(settings, stores, sessions).run(now=NOW + timedelta(seconds=59))

    assert first is not None and again is not None
    assert [o.swept for o in again.outcomes if o.store is RetentionStore.mongodb] == [0, 0]
    for name in COLLECTIONS:
        assert await texts(mongo, name) == kept[name]


@pytest.mark.settings(mongodb_batch_size=100)
async def test_the_sweep_deletes_in_bounded_batches(
    settings: Settings, stores: Stores, sessions: Any, mongo: Any
) -> None:
    old = [{"n": i, "created_at": NOW - WINDOW - timedelta(hours=1)} for i in range(350)]
    young = [{"n": i, "created_at": NOW - timedelta(hours=1)} for i in range(50)]
    await mongo["instagram_comments"].insert_many(old + young)

    done = await enforcer(settings, stores, sessions).run(now=NOW)

    assert done is not None
    assert outcome(done, "instagram_comments").swept == 350
    assert await mongo["instagram_comments"].count_documents({}) == 50


# --- S3 on moto ------------------------------------------------------------------------


async def put(s3: Any, bucket: str, keys: list[str]) -> datetime:
    for key in keys:
        await s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    listed = await s3.list_objects_v2(Bucket=bucket)
    newest: datetime = max(o["LastModified"] for o in listed["Contents"] if o["Key"] in keys)
    return newest


async def keys_of(s3: Any, bucket: str) -> list[str]:
    listed = await s3.list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


async def test_a_missing_lifecycle_rule_is_applied_and_nothing_is_swept(
    settings: Settings, stores: Stores, sessions: Any, s3: Any, mongo: Any
) -> None:
    await s3.create_bucket(Bucket=BUCKET)
    await put(s3, BUCKET, ["instagram/1/a.jpg"])

    # Even with a clock far past the window: the lifecycle rule is the store's to run.
    done = await enforcer(settings, stores, sessions).run(now=NOW + 10 * WINDOW)

    assert done is not None
    result = outcome(done, BUCKET)
    assert result.mode is RetentionMode.lifecycle
    assert result.swept == 0
    assert OUR_RULE in await rules_of(s3)
    assert await keys_of(s3, BUCKET) == ["instagram/1/a.jpg"]
    assert result.oldest_seconds is not None and result.oldest_seconds > 9 * WINDOW.days * 86400


@pytest.mark.settings(retention_sweep="s3")
async def test_an_explicit_s3_sweep_deletes_only_objects_older_than_the_window(
    settings: Settings, stores: Stores, sessions: Any, s3: Any, mongo: Any
) -> None:
    await s3.create_bucket(Bucket=BUCKET)
    await s3.create_bucket(Bucket="soundops-media")
    await put(s3, BUCKET, [f"instagram/1/old-{i}.jpg" for i in range(3)])
    await put(s3, "soundops-media", ["tenants/1/old.jpg"])
    await asyncio.sleep(1.1)  # moto's LastModified counts whole seconds: two generations
    young = [f"instagram/2/young-{i}.jpg" for i in range(2)]
    await put(s3, BUCKET, young)
    listed = await s3.list_objects_v2(Bucket=BUCKET)
    youngest_start = min(o["LastModified"] for o in listed["Contents"] if o["Key"] in young)
    before = sample("deletion_retention_swept_total", "s3", BUCKET)

    # The cutoff is exactly the young objects' LastModified: they are not older, they stay.
    done = await enforcer(settings, stores, sessions).run(now=youngest_start + WINDOW)

    assert done is not None
    result = outcome(done, BUCKET)
    assert result.mode is RetentionMode.sweep
    assert result.reason == "DELETION_RETENTION_SWEEP names s3"
    assert result.swept == 3
    assert await keys_of(s3, BUCKET) == young
    assert await keys_of(s3, "soundops-media") == ["tenants/1/old.jpg"]
    assert sample("deletion_retention_swept_total", "s3", BUCKET) == before + 3
    assert result.oldest_seconds == WINDOW.total_seconds()


@pytest.mark.settings(retention_sweep="s3")
async def test_an_s3_sweep_pages_through_more_than_a_thousand_keys(
    settings: Settings, stores: Stores, sessions: Any, s3: Any, mongo: Any
) -> None:
    await s3.create_bucket(Bucket=BUCKET)
    newest = datetime.now(UTC)
    for start in range(0, 1_200, 100):
        await asyncio.gather(
            *(
                s3.put_object(Bucket=BUCKET, Key=f"instagram/1/{i:05d}.jpg", Body=b"x")
                for i in range(start, start + 100)
            )
        )
    newest = datetime.now(UTC) + timedelta(seconds=2)

    done = await enforcer(settings, stores, sessions).run(now=newest + WINDOW)

    assert done is not None
    assert outcome(done, BUCKET).swept == 1_200
    assert await keys_of(s3, BUCKET) == []


# --- one worker at a time -------------------------------------------------------------


async def test_of_two_racing_sweepers_one_sweeps_and_each_document_goes_once(
    settings: Settings, stores: Stores, sessions: Any, mongo: Any
) -> None:
    kept = await seed(mongo)
    first, second = (
        enforcer(settings, stores, sessions, "w1"),
        enforcer(settings, stores, sessions, "w2"),
    )

    results = await asyncio.gather(first.run(now=NOW), second.run(now=NOW))

    done = [r for r in results if r is not None]
    assert len(done) == 1
    assert sum(o.swept for o in done[0].outcomes if o.store is RetentionStore.mongodb) == 6
    for name in COLLECTIONS:
        assert await texts(mongo, name) == kept[name]
    # Released: the next pass may run.
    assert await second.run(now=NOW) is not None


async def test_a_crashed_sweepers_lease_is_taken_over_once_it_expires(
    settings: Settings, stores: Stores, sessions: Any, mongo: Any
) -> None:
    await seed(mongo)
    real_now = datetime.now(UTC)
    async with sessions() as session:
        assert await repository.take_lease(
            session, LEASE, "crashed", real_now, real_now + timedelta(hours=1)
        )
    assert await enforcer(settings, stores, sessions).run(now=NOW) is None
    assert await mongo["instagram_messages"].count_documents({}) == 6

    async with sessions() as session:  # the crashed worker's lease runs out
        assert await repository.take_lease(
            session, LEASE, "crashed", real_now, real_now - timedelta(seconds=1)
        )
    done = await enforcer(settings, stores, sessions).run(now=NOW)

    assert done is not None
    assert await mongo["instagram_messages"].count_documents({}) == 3


# --- the worker: a pass at start --------------------------------------------------------


@pytest.mark.settings(run_worker=True, retention_check_seconds=3600)
async def test_the_worker_sweeps_at_start(settings: Settings, mongo: Any) -> None:
    from app.main import create_app

    now = datetime.now(UTC)
    await mongo["instagram_messages"].insert_many(
        [
            {"text": "old", "created_at": now - WINDOW - timedelta(hours=1)},
            {"text": "young", "created_at": now - WINDOW + timedelta(hours=1)},
        ]
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        worker = app.state.services.worker
        async with asyncio.timeout(60):
            while worker.retention.last is None:
                await asyncio.sleep(0.05)
    assert await texts(mongo, "instagram_messages") == ["young"]


# --- /readyz/stores and the report say which mode each store is in ----------------------


async def test_readyz_stores_names_each_locations_mode(client: Any, s3: Any, mongo: Any) -> None:
    await s3.create_bucket(Bucket=BUCKET)
    await s3.put_bucket_lifecycle_configuration(
        Bucket=BUCKET,
        LifecycleConfiguration={
            "Rules": [
                {"ID": "r", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 30}},
            ]
        },
    )

    response = await client.get("/readyz/stores")
    ready = await client.get("/readyz")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["checks"] == {"mongodb": "ok", "s3": "ok"}
    modes = {item["location"]: (item["mode"], item["reason"]) for item in body["retention"]}
    assert modes == {
        f"{mongo.name}.instagram_messages": ("sweep", "the server refuses the TTL index"),
        f"{mongo.name}.instagram_comments": ("sweep", "the server refuses the TTL index"),
        BUCKET: ("lifecycle", "the lifecycle rule is in place: the store expires data itself"),
    }
    assert ready.json()["checks"] == {"tracking_db": "ok"}


async def test_the_cli_report_says_which_mode_each_store_is_in(
    cli_env: None, s3: Any, mongo: Any
) -> None:
    import json

    _, out = await base.run_cli("check", "--json")

    items = {item["name"]: item for item in json.loads(out)["items"]}
    assert items[f"{mongo.name}.instagram_messages"]["mode"] == "sweep"
    assert items[f"{mongo.name}.instagram_messages"]["mode_reason"] == (
        "the server refuses the TTL index"
    )
    assert items[BUCKET]["mode"] == "sweep"  # no bucket yet: missing, so swept
    assert items[BUCKET]["mode_reason"] == "the lifecycle rule is missing"


@pytest.mark.settings(lease_seconds=1)
async def test_a_pass_whose_lease_was_taken_over_is_stopped(
    settings: Settings, stores: Stores, sessions: Any, mongo: Any
) -> None:
    """A stalled worker whose lease another one took stops at its next heartbeat."""
    import sqlalchemy as sa

    from app.models import ServiceLease

    stalled = enforcer(settings, stores, sessions, "stalled")
    assert await stalled.take_lease()
    async with sessions() as session:  # another worker took it over meanwhile
        await session.execute(sa.update(ServiceLease).values(owner="other"))
        await session.commit()
    work = asyncio.create_task(asyncio.sleep(3600))

    async with asyncio.timeout(60):
        await stalled._heartbeat(work)

    with pytest.raises(asyncio.CancelledError):
        await work
    assert not await stalled.take_lease()
