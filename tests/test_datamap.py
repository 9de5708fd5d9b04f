"""The data map: validation, delete order, the registry, and `datamap check` on live stores."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymongo import AsyncMongoClient
from typer.testing import CliRunner

from app.cli import cli
from app.datamap import BUNDLED_MAP, DataMapError, load_datamap
from app.models import RequestKind
from app.purgers.base import Purger, PurgerName
from app.purgers.registry import PURGERS
from app.settings import get_settings
from app.subjects import MetaDataSubject
from testsupport.seed import create_buckets


def test_every_purger_name_is_registered() -> None:
    assert set(PURGERS) == set(PurgerName)
    for name, cls in PURGERS.items():
        assert cls.name is name
        for method in ("build", "preview", "purge", "verify"):
            assert callable(getattr(cls, method))


def test_scripted_purgers_satisfy_the_protocol(tmp_path: Path) -> None:
    from testsupport.scripted import scripted_purgers

    for purger in scripted_purgers(tmp_path / "x.json").values():
        assert isinstance(purger, Purger)


def test_bundled_map_orders_children_before_parents() -> None:
    pg = load_datamap().postgres
    order = pg.delete_order
    assert order[-1] == "tenants"
    for name, table in pg.tables.items():
        for owner in table.owners:
            assert order.index(name) < order.index(owner.references), (name, owner.references)
    assert pg.reached(RequestKind.meta_data)[-1] == "instagram_accounts"
    assert "tenants" not in pg.reached(RequestKind.instagram_disconnect)


def test_the_map_says_whom_each_meta_data_identity_reaches() -> None:
    """The contract's "Selection by connection", as the resolver reads it from the map:
    only an identity that IS the Instagram account reaches its other connections."""
    identities = load_datamap().postgres.identities
    reaches = {name: identities[name].reaches for name in MetaDataSubject.model_fields}
    assert reaches == {
        "facebook_user_id": "connections",
        "facebook_page_name": "connections",
        "ig_user_id": "instagram_account",
        "ig_username": "instagram_account",
    }
    assert identities["instagram_account_id"].reaches == "connections"
    # Mongo reaches documents by Instagram user id only through such identities.
    for collection in load_datamap().mongodb.collections.values():
        by_field = {
            m.field: (m.within, m.third_party) for m in collection.kinds[RequestKind.meta_data]
        }
        assert by_field == {
            "instagram_account_id": ("account_ids", False),
            "ig_user_id": ("subject_ig_user_ids", False),
            # What a person wrote: only by username, and counted apart as third-party data.
            "from_username": ("third_party_usernames", True),
        }


def _raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(BUNDLED_MAP.read_text())
    return data


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "map.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["postgres"]["tables"]["users"]["owners"].append(
                {"column": "x_id", "references": "nowhere"}
            ),
            "unmapped nowhere",
        ),
        (
            lambda d: d["postgres"]["tables"]["tenants"].update(
                owners=[{"column": "user_id", "references": "users"}]
            ),
            "cycle",
        ),
        (lambda d: d["postgres"]["tables"]["contacts"].update(kinds={}), "says nothing about it"),
        (
            lambda d: d["s3"]["buckets"]["soundops-media"]["kinds"].update(
                account=["tenants/{tenant_id}"]
            ),
            "trailing",
        ),
        (
            lambda d: d["postgres"]["tables"]["users"]["kinds"].update(
                account={"delete": True, "keep": "both"}
            ),
            "exactly one of",
        ),
        (
            lambda d: d["postgres"]["tables"]["users"].update(
                owners=[{"column": "tenant_id; DROP TABLE x", "references": "tenants"}]
            ),
            "pattern",
        ),
        (
            lambda d: d["postgres"]["identities"]["site_name"].update(reaches="instagram_account"),
            "reaches an Instagram account",
        ),
    ],
)
def test_invalid_maps_are_refused(tmp_path: Path, change: Any, message: str) -> None:
    data = copy.deepcopy(_raw())
    change(data)
    with pytest.raises(DataMapError, match=message):
        load_datamap(_write(tmp_path, data))


def test_unreadable_map_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataMapError, match="cannot read"):
        load_datamap(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("postgres: [")
    with pytest.raises(DataMapError, match="not valid YAML"):
        load_datamap(tmp_path / "bad.yaml")


# --- datamap check against the live stores ---------------------------------------------


@pytest.fixture
def live_stores(
    fresh_pg_database: Any,
    soundops_template_database: str,
    mongodb_url: str,
    s3_endpoint_url: str,
    moto_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    database = fresh_pg_database(template=soundops_template_database, prefix="soundops")
    mongo_db = f"check_{uuid.uuid4().hex[:8]}"
    env = {
        "DELETION_ENVIRONMENT": "development",
        "DELETION_DATABASE_URL": f"sqlite:///{tmp_path / 'tracking.db'}",
        "DELETION_TARGET_POSTGRES_URL": database.url,
        "DELETION_MONGODB_URL": mongodb_url,
        "DELETION_MONGODB_DATABASE": mongo_db,
        "DELETION_S3_ENDPOINT_URL": s3_endpoint_url,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    moto_server.reset()
    get_settings.cache_clear()
    yield {**env, "pg_dsn": database.url}
    get_settings.cache_clear()


@pytest.fixture
async def seeded_stores(live_stores: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    from aiobotocore.session import get_session

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(live_stores["DELETION_MONGODB_URL"])
    db = client[live_stores["DELETION_MONGODB_DATABASE"]]
    for name in ("instagram_messages", "instagram_comments"):
        await db[name].insert_one({"probe": True})
    async with get_session().create_client(
        "s3", endpoint_url=live_stores["DELETION_S3_ENDPOINT_URL"], region_name="us-east-1"
    ) as s3:
        await create_buckets(s3)
    yield live_stores
    await client.drop_database(live_stores["DELETION_MONGODB_DATABASE"])
    await client.close()


async def _run_check() -> tuple[int, str]:
    # The CLI runs its own event loop: give it a thread.
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["datamap", "check"], env={"COLUMNS": "200"}
    )
    return result.exit_code, result.output


async def test_datamap_check_passes_on_the_soundops_stores(seeded_stores: dict[str, str]) -> None:
    code, output = await _run_check()
    assert code == 0, output
    assert "covered by the map" in output


async def test_datamap_check_names_an_unmapped_table(seeded_stores: dict[str, str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(seeded_stores["pg_dsn"])
    try:
        await conn.execute(
            "CREATE TABLE fan_notes (id uuid PRIMARY KEY, tenant_id uuid REFERENCES tenants(id))"
        )
        await conn.execute("ALTER TABLE site_pages ADD COLUMN author_id uuid REFERENCES users(id)")
    finally:
        await conn.close()
    code, output = await _run_check()
    assert code == 1
    assert "fan_notes" in output and "not in the data map" in output
    assert "site_pages.author_id" in output


async def test_datamap_check_names_an_unmapped_collection_and_bucket(
    seeded_stores: dict[str, str],
) -> None:
    from aiobotocore.session import get_session

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        seeded_stores["DELETION_MONGODB_URL"]
    )
    await client[seeded_stores["DELETION_MONGODB_DATABASE"]]["instagram_stories"].insert_one(
        {"x": 1}
    )
    await client.close()
    async with get_session().create_client(
        "s3", endpoint_url=seeded_stores["DELETION_S3_ENDPOINT_URL"], region_name="us-east-1"
    ) as s3:
        await s3.create_bucket(Bucket="soundops-exports")
    code, output = await _run_check()
    assert code == 1
    assert "instagram_stories" in output and "soundops-exports" in output
