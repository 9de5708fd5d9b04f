"""Selection by connection: whom a request reaches, in every store, when two tenants share
an Instagram account.

The world (testsupport/seed.py, ``shared_instagram=True``): tenant alpha's Facebook Login
connection and tenant delta's connection of the *same* Instagram account (same
``ig_user_id``, same Page, different ``facebook_user_id`` and tokens), both with rows,
messages, comments and cached media under the one ``instagram/{ig_user_id}/`` prefix; and
documents of that Instagram user whose connection row is gone (a former connection).
Each test resolves a request, runs the four real purgers (the Graph step first, as the
plan does) against real PostgreSQL, FerretDB, moto and the fake Graph API, verifies with
the same selection, and compares snapshots of every store.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiobotocore.session import get_session
from cryptography.fernet import Fernet
from pymongo import AsyncMongoClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app.datamap import DataMap, Selection, load_datamap
from app.db import create_engine
from app.models import RequestKind
from app.pii import Pii
from app.purgers.base import PurgeResult, Retained, Subject
from app.purgers.meta_graph import MetaGraphPurger
from app.purgers.mongodb import MongoPurger
from app.purgers.postgres import PostgresPurger
from app.purgers.s3 import S3Purger
from app.services.resolution import Resolver
from testsupport.fake_graph import FakeGraph
from testsupport.harness.services import FreshPgDatabase, MotoServer
from testsupport.seed import (
    CACHE,
    FERNET_KEY,
    Account,
    World,
    create_buckets,
    make_world,
    mentioning,
    seed_mongo,
    seed_postgres,
    seed_s3,
    snapshot_mongo,
    snapshot_postgres,
    snapshot_s3,
    without,
)

DATAMAP: DataMap = load_datamap()
VERSION = "v25.0"
COLLECTIONS = ("instagram_messages", "instagram_comments")
# A former connection of the shared Instagram account (its row is gone): its documents.
FORMER_TENANT, FORMER_ACCOUNT = str(uuid.uuid4()), str(uuid.uuid4())


@dataclass
class Shared:
    world: World
    engine: AsyncEngine
    dsn: str
    mongo: Any
    s3: Any
    graph: FakeGraph
    http: httpx.AsyncClient

    @property
    def alpha(self) -> Account:
        """alpha's connection of the shared Instagram account (Facebook Login)."""
        return self.world.tenants["alpha"].accounts[0]

    @property
    def alpha_other(self) -> Account:
        """alpha's other Instagram account (Instagram Login), shared with nobody."""
        return self.world.tenants["alpha"].accounts[1]

    @property
    def delta(self) -> Account:
        """delta's connection of the same Instagram account, by another person."""
        (account,) = self.world.tenants["delta"].accounts
        return account

    def delta_ids(self) -> list[str]:
        return [str(self.world.tenants["delta"].id), str(self.delta.id)]

    async def snapshots(self) -> dict[str, Any]:
        return {
            "postgres": await snapshot_postgres(self.dsn),
            "mongodb": await snapshot_mongo(self.mongo),
            "s3": await snapshot_s3(self.s3),
        }

    async def resolve(
        self, kind: RequestKind, pinned: Selection | None = None, **identities: str
    ) -> Subject:
        resolver = Resolver(self.engine, DATAMAP.postgres)
        resolution = await resolver.resolve(kind, identities, pinned)
        return Subject(uuid.uuid4(), kind, {k: Pii(v) for k, v in identities.items()}, resolution)

    def purgers(self) -> dict[str, Any]:
        """In the plan's order: the Graph step needs the tokens the PostgreSQL step deletes."""
        return {
            "meta_graph": MetaGraphPurger(
                self.engine,
                DATAMAP,
                self.http,
                Fernet(FERNET_KEY),
                facebook_url=self.graph.facebook_url,
                instagram_url=self.graph.instagram_url,
                version=VERSION,
            ),
            "postgres": PostgresPurger(self.engine, DATAMAP.postgres),
            "mongodb": MongoPurger(self.mongo.client, self.mongo.name, DATAMAP.mongodb),
            "s3": S3Purger(self.s3, DATAMAP.s3),
        }

    async def run(self, subject: Subject) -> dict[str, PurgeResult]:
        """Preview, purge, then verify with the same selection: nothing of it is left."""
        purgers = self.purgers()
        previews = {name: await p.preview(subject) for name, p in purgers.items()}
        results = {name: await p.purge(subject) for name, p in purgers.items()}
        for name, purger in purgers.items():
            assert set((await purger.verify(subject)).values()) <= {0}, name
            if name != "meta_graph":  # the Graph step counts calls, some of them "already gone"
                assert results[name] == previews[name], name
        return results


@pytest.fixture
async def shared(
    fresh_pg_database: FreshPgDatabase,
    soundops_template_database: str,
    mongodb_url: str,
    moto_server: MotoServer,
    s3_endpoint_url: str,
) -> AsyncIterator[Shared]:
    world = make_world(shared_instagram=True)
    database = fresh_pg_database(template=soundops_template_database, prefix="soundops_shared")
    await seed_postgres(database.url, world)
    engine = create_engine(database.url)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    mongo = client[f"shared_{uuid.uuid4().hex[:8]}"]
    await seed_mongo(mongo, world)
    former = {
        "tenant_id": FORMER_TENANT,
        "instagram_account_id": FORMER_ACCOUNT,
        "ig_user_id": world.tenants["alpha"].accounts[0].ig_user_id,
        "created_at": datetime.now(UTC).replace(microsecond=0),
    }
    for name in COLLECTIONS:
        await mongo[name].insert_one({**former, "text": "from a former connection"})
    moto_server.reset()
    graph = FakeGraph(VERSION).start()
    graph.add_world(world)
    try:
        async with (
            get_session().create_client(
                "s3", endpoint_url=s3_endpoint_url, region_name="us-east-1"
            ) as s3,
            httpx.AsyncClient() as http,
        ):
            await create_buckets(s3)
            await seed_s3(s3, world)
            yield Shared(world, engine, database.url, mongo, s3, graph, http)
    finally:
        graph.close()
        await engine.dispose()
        await client.drop_database(mongo.name)
        await client.close()
    assert graph.errors == []


def cache_of(snapshot: dict[str, Any], ig_user_id: str) -> list[Any]:
    return [e for e in snapshot["s3"][CACHE] if e[0].startswith(f"instagram/{ig_user_id}/")]


def former_documents(snapshot: dict[str, Any]) -> dict[str, list[str]]:
    return {
        name: [d for d in snapshot["mongodb"][name] if FORMER_ACCOUNT in d] for name in COLLECTIONS
    }


async def test_meta_data_by_a_persons_facebook_id_never_reaches_another_tenants_connection(
    shared: Shared,
) -> None:
    alpha, delta = shared.alpha, shared.delta
    before = await shared.snapshots()
    assert len(cache_of(before, alpha.ig_user_id)) == 3
    delta_before = mentioning(before, shared.delta_ids())
    assert all(len(delta_before["mongodb"][name]) == 3 for name in COLLECTIONS)

    subject = await shared.resolve(
        RequestKind.meta_data, facebook_user_id=alpha.facebook_user_id or ""
    )
    results = await shared.run(subject)

    after = await shared.snapshots()
    # delta's rows, documents and objects are byte-for-byte as they were...
    assert mentioning(after, shared.delta_ids()) == delta_before
    # ...so is the cache of the Instagram account that delta still has, reported as kept,
    assert cache_of(after, alpha.ig_user_id) == cache_of(before, alpha.ig_user_id)
    assert results["s3"].deleted == {CACHE: 0}
    assert results["s3"].retained == {CACHE: Retained(3, DATAMAP.s3.buckets[CACHE].shared)}
    # ...and the documents of a former connection: a Facebook id is not the Instagram account.
    assert former_documents(after) == former_documents(before)
    assert len(former_documents(after)["instagram_messages"]) == 1
    # alpha's connection is gone everywhere.
    assert mentioning(after, [str(alpha.id)]) == {}
    assert results["mongodb"].deleted == {"instagram_messages": 3, "instagram_comments": 3}
    assert results["postgres"].deleted["instagram_accounts"] == 1
    # At Meta: alpha's person is revoked with alpha's token; the Page that delta still uses
    # keeps its subscription, and delta's person keeps the permissions.
    deletes = [(c.path, c.token) for c in shared.graph.calls if c.method == "DELETE"]
    assert deletes == [(f"/{VERSION}/{alpha.facebook_user_id}/permissions", alpha.user_token)]
    assert shared.graph.subscribed("facebook", delta.facebook_page_id or "")
    assert shared.graph.granted("facebook", delta.facebook_user_id or "")
    # The resolution says so, and the reason is the map's.
    assert subject.resolution.account_ids == [str(alpha.id)]
    assert subject.resolution.shared_ig_user_ids == [alpha.ig_user_id]
    assert subject.resolution.subject_ig_user_ids == []


@pytest.mark.parametrize("identity", ["ig_user_id", "ig_username"])
async def test_meta_data_by_the_instagram_account_reaches_every_tenants_connection_of_it(
    shared: Shared, identity: str
) -> None:
    alpha, delta = shared.alpha, shared.delta
    before = await shared.snapshots()
    value = getattr(alpha, identity)

    subject = await shared.resolve(RequestKind.meta_data, **{identity: value})
    results = await shared.run(subject)

    after = await shared.snapshots()
    reached = [str(alpha.id), str(delta.id), FORMER_ACCOUNT, alpha.ig_user_id]
    assert mentioning(after, reached) == {}
    assert results["s3"].deleted == {CACHE: 3} and results["s3"].retained == {}
    # Two connections' documents, and the former connection's (by the Instagram user id).
    assert results["mongodb"].deleted == {"instagram_messages": 7, "instagram_comments": 7}
    assert results["postgres"].deleted["instagram_accounts"] == 2
    # Everything else is unchanged: both tenants, alpha's other Instagram account, the rest;
    # the two campaign events that pointed at the connections stay, unlinked from them.
    kept_before, kept_after = without(before, reached), without(after, reached)
    events = kept_after["postgres"]["analytics_events"]
    unlinked = [row for row in events if row not in kept_before["postgres"]["analytics_events"]]
    assert len(unlinked) == 2 and all('"instagram_account_id": null' in r for r in unlinked)
    kept_after["postgres"]["analytics_events"] = [row for row in events if row not in unlinked]
    assert kept_after == kept_before
    # At Meta: each person revoked with their own token; the Page is used by nobody now.
    revokes = {
        (c.path, c.token)
        for c in shared.graph.calls
        if c.method == "DELETE" and c.edge == "permissions"
    }
    assert revokes == {
        (f"/{VERSION}/{alpha.facebook_user_id}/permissions", alpha.user_token),
        (f"/{VERSION}/{delta.facebook_user_id}/permissions", delta.user_token),
    }
    assert not shared.graph.subscribed("facebook", alpha.facebook_page_id or "")
    tokens = {alpha.user_token, alpha.page_token, delta.user_token, delta.page_token}
    assert {c.token for c in shared.graph.calls} <= tokens
    assert subject.resolution.account_ids == sorted([str(alpha.id), str(delta.id)])
    assert subject.resolution.subject_ig_user_ids == [alpha.ig_user_id]
    assert subject.resolution.shared_ig_user_ids == []


async def test_account_deletion_never_reaches_another_tenants_connection_of_a_shared_account(
    shared: Shared,
) -> None:
    alpha, delta = shared.alpha, shared.delta
    tenant = shared.world.tenants["alpha"]
    before = await shared.snapshots()

    subject = await shared.resolve(RequestKind.account, site_name=tenant.site_name)
    results = await shared.run(subject)

    after = await shared.snapshots()
    assert mentioning(after, shared.delta_ids()) == mentioning(before, shared.delta_ids())
    assert former_documents(after) == former_documents(before)
    assert mentioning(after, [str(tenant.id), str(alpha.id), str(shared.alpha_other.id)]) == {}
    # The shared account's cache stays (delta still has it), alpha's other account's goes.
    assert cache_of(after, alpha.ig_user_id) == cache_of(before, alpha.ig_user_id)
    assert cache_of(after, shared.alpha_other.ig_user_id) == []
    assert results["s3"].retained == {CACHE: Retained(3, DATAMAP.s3.buckets[CACHE].shared)}
    assert results["s3"].deleted[CACHE] == 3
    # The Page delta still uses keeps its subscription; delta's person keeps the grant.
    assert shared.graph.subscribed("facebook", delta.facebook_page_id or "")
    assert shared.graph.granted("facebook", delta.facebook_user_id or "")
    assert not shared.graph.granted("facebook", alpha.facebook_user_id or "")


async def test_a_disconnect_never_reaches_another_tenants_connection_of_the_same_account(
    shared: Shared,
) -> None:
    alpha = shared.alpha
    before = await shared.snapshots()

    subject = await shared.resolve(
        RequestKind.instagram_disconnect,
        tenant_id=str(shared.world.tenants["alpha"].id),
        instagram_account_id=str(alpha.id),
    )
    purgers = shared.purgers()
    for name in ("meta_graph", "postgres", "mongodb"):  # the disconnect plan
        await purgers[name].purge(subject)
        assert set((await purgers[name].verify(subject)).values()) <= {0}

    after = await shared.snapshots()
    assert mentioning(after, shared.delta_ids()) == mentioning(before, shared.delta_ids())
    assert former_documents(after) == former_documents(before)
    assert after["s3"] == before["s3"]


async def test_a_pinned_request_by_the_instagram_account_stays_within_its_pin(
    shared: Shared,
) -> None:
    """An e-mailed request by ig_username, confirmed for alpha's connection only: the
    Instagram account's other connection (delta's) and the documents keyed only by the
    Instagram user id are outside the pin, so neither is reached, by any id."""
    alpha = shared.alpha
    before = await shared.snapshots()
    pin = Selection(tenant_ids=[str(shared.world.tenants["alpha"].id)], account_ids=[str(alpha.id)])

    subject = await shared.resolve(RequestKind.meta_data, pin, ig_username=alpha.ig_username)
    results = await shared.run(subject)

    after = await shared.snapshots()
    assert subject.resolution.account_ids == [str(alpha.id)]
    assert subject.resolution.subject_ig_user_ids == []
    assert subject.resolution.shared_ig_user_ids == [alpha.ig_user_id]
    assert mentioning(after, shared.delta_ids()) == mentioning(before, shared.delta_ids())
    assert former_documents(after) == former_documents(before)
    assert cache_of(after, alpha.ig_user_id) == cache_of(before, alpha.ig_user_id)
    assert mentioning(after, [str(alpha.id)]) == {}
    # The pin limits connections; what the named person wrote stays reached (none here).
    assert subject.resolution.third_party_usernames == [alpha.ig_username]
    assert results["mongodb"].deleted == {"instagram_messages": 3, "instagram_comments": 3}


def written_by(snapshot: dict[str, Any], username: str) -> dict[str, list[str]]:
    marker = f'"from_username": "{username}"'
    return {name: [d for d in snapshot["mongodb"][name] if marker in d] for name in COLLECTIONS}


async def test_meta_data_by_username_reaches_what_a_fan_wrote_in_every_tenant_only(
    shared: Shared,
) -> None:
    """A fan who was never a customer: their comments in every tenant are deleted, counted
    as third-party data; nothing else of those tenants, in any store, is touched."""
    before = await shared.snapshots()
    fan_comments = written_by(before, "fan0")["instagram_comments"]
    tenants = {json.loads(d)["tenant_id"] for d in fan_comments}
    assert len(tenants) >= 3

    subject = await shared.resolve(RequestKind.meta_data, ig_username=" @Fan0 ")
    results = await shared.run(subject)

    after = await shared.snapshots()
    assert subject.resolution.account_ids == []
    assert subject.resolution.third_party_usernames == ["Fan0", "fan0"]
    assert results["mongodb"].deleted == {
        "instagram_messages": 0,
        "instagram_comments": 0,
        "instagram_comments.as_third_party": len(fan_comments),
    }
    assert written_by(after, "fan0") == {name: [] for name in COLLECTIONS}
    kept = {
        name: [d for d in before["mongodb"][name] if d not in fan_comments] for name in COLLECTIONS
    }
    assert after["mongodb"] == kept
    assert (after["postgres"], after["s3"]) == (before["postgres"], before["s3"])


@pytest.mark.parametrize("identity", ["facebook_user_id", "facebook_page_name", "ig_user_id"])
async def test_only_the_username_reaches_what_someone_wrote(shared: Shared, identity: str) -> None:
    """A Facebook id, a Page name or an Instagram user id never identifies the writer of a
    comment: the request reaches connections only, even where the account's username wrote."""
    alpha = shared.alpha
    subject = await shared.resolve(RequestKind.meta_data, **{identity: getattr(alpha, identity)})
    assert subject.resolution.account_ids
    assert subject.resolution.third_party_usernames == []
    assert "instagram_comments.as_third_party" not in shared.purgers()["mongodb"].filters(subject)


async def test_an_approved_request_by_a_fans_username_reaches_what_they_wrote(
    shared: Shared,
) -> None:
    """An e-mailed request naming a username that nobody on file has goes to review; once
    approved, its pin holds no connection, yet what the named person wrote is reached:
    the pin limits connections, not the writer's own data."""
    before = await shared.snapshots()
    fan_comments = written_by(before, "fan1")["instagram_comments"]

    subject = await shared.resolve(RequestKind.meta_data, Selection(), ig_username="fan1")
    results = await shared.run(subject)

    assert (subject.resolution.account_ids, subject.resolution.tenant_ids) == ([], [])
    assert results["mongodb"].deleted["instagram_comments.as_third_party"] == len(fan_comments)
    after = await shared.snapshots()
    assert written_by(after, "fan1") == {name: [] for name in COLLECTIONS}
    assert (after["postgres"], after["s3"]) == (before["postgres"], before["s3"])


async def test_a_request_approved_without_a_connection_never_reaches_one_made_since(
    shared: Shared,
) -> None:
    """A fan's e-mailed request approved as ``third_party_only`` is pinned to no connection:
    if the username has a connection by the time it runs (made since, or a careless
    approval), that connection, its data and its cached media are not reached."""
    alpha = shared.alpha
    before = await shared.snapshots()

    subject = await shared.resolve(
        RequestKind.meta_data, Selection(), ig_username=alpha.ig_username
    )
    results = await shared.run(subject)

    resolution = subject.resolution
    assert (resolution.tenant_ids, resolution.account_ids) == ([], [])
    assert (resolution.ig_user_ids, resolution.subject_ig_user_ids) == ([], [])
    assert resolution.third_party_usernames == [alpha.ig_username]
    after = await shared.snapshots()
    assert (after["postgres"], after["s3"]) == (before["postgres"], before["s3"])
    assert mentioning(after, [str(alpha.id)]) == mentioning(before, [str(alpha.id)])
    assert results["mongodb"].deleted == {"instagram_messages": 0, "instagram_comments": 0}
