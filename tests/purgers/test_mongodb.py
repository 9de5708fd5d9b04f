"""The MongoDB purger against a real MongoDB wire-protocol server (FerretDB 1.24.2 here).

Documents are seeded in the shape of ``shared/soundops/README.md``. The world:

- tenant ``band`` with two Instagram accounts, ``band_main`` and ``band_side``;
- tenant ``label`` with ``label_main``, connected by the *same Instagram user* as
  ``band_main`` (a meta_data request about that person reaches both tenants);
- tenant ``venue`` with ``venue_main``, sharing nothing with the others.

Each test works in a database of its own, dropped at the end.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
import yaml
from annotated_types import Le
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteError,
)

from app.datamap import BUNDLED_MAP, Collection, Match, MongoMap, Resolution
from app.models import RequestKind
from app.purgers.base import (
    PurgeFailed,
    PurgeNotApplicable,
    Purger,
    PurgeRetriable,
    Subject,
)
from app.purgers.mongodb import MongoPurger, delete_in_id_ranges, mongo_errors
from app.settings import Settings
from testsupport.harness.services import FerretDBServer

Document = dict[str, Any]
MESSAGES = "instagram_messages"
COMMENTS = "instagram_comments"
COLLECTIONS = (MESSAGES, COMMENTS)
# Matches one delete_many handles on FerretDB 1.24: its SQLite backend ("too many SQL
# variables") and its PostgreSQL backend (PostgreSQL's 65,535 bind parameters).
FERRETDB_DELETE_LIMITS = {"sqlite": 32_766, "postgresql": 65_535}


def soundops_mongo_map() -> MongoMap:
    """The ``mongodb:`` section of the bundled data map, exactly as the service reads it."""
    raw = yaml.safe_load(BUNDLED_MAP.read_text(encoding="utf-8"))
    return MongoMap.model_validate(raw["mongodb"])


# --- the seeded world ---------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    tenant_id: str
    account_id: str
    ig_user_id: str
    messages: int
    comments: int


@dataclass(frozen=True)
class World:
    band: str
    label: str
    venue: str
    band_main: Account
    band_side: Account
    label_main: Account
    venue_main: Account

    @property
    def accounts(self) -> list[Account]:
        return [self.band_main, self.band_side, self.label_main, self.venue_main]


def _ig_user_id() -> str:
    return str(17_841_400_000_000_000 + uuid.uuid4().int % 10**12)


def new_world() -> World:
    band, label, venue = (str(uuid.uuid4()) for _ in range(3))
    shared_ig_user = _ig_user_id()
    return World(
        band=band,
        label=label,
        venue=venue,
        band_main=Account(band, str(uuid.uuid4()), shared_ig_user, messages=7, comments=3),
        band_side=Account(band, str(uuid.uuid4()), _ig_user_id(), messages=5, comments=2),
        label_main=Account(label, str(uuid.uuid4()), shared_ig_user, messages=4, comments=4),
        venue_main=Account(venue, str(uuid.uuid4()), _ig_user_id(), messages=6, comments=5),
    )


def message(account: Account, n: int, created_at: datetime) -> Document:
    return {
        "tenant_id": account.tenant_id,
        "instagram_account_id": account.account_id,
        "ig_user_id": account.ig_user_id,
        "thread_id": f"t_{account.account_id[:8]}_{n % 3}",
        "from_id": str(17_841_499_000_000_000 + n),
        "text": f"hi there, message {n}",
        "created_at": created_at,
    }


def comment(account: Account, n: int, created_at: datetime) -> Document:
    return {
        "tenant_id": account.tenant_id,
        "instagram_account_id": account.account_id,
        "ig_user_id": account.ig_user_id,
        "media_id": f"1790000000000{n % 4}",
        "comment_id": f"1800000000{uuid.uuid4().int % 10**8:08d}",
        "from_username": f"fan_{n}",
        "text": f"great set! #{n}",
        "created_at": created_at,
    }


async def insert(db: AsyncDatabase[Document], name: str, docs: list[Document]) -> None:
    for start in range(0, len(docs), 5_000):
        await db[name].insert_many(docs[start : start + 5_000])


async def seed(db: AsyncDatabase[Document], world: World) -> None:
    # Interleave the accounts so that every account's _ids are spread over the whole
    # collection: an _id-range batch always has other accounts' documents inside it.
    base = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    messages: list[Document] = []
    comments: list[Document] = []
    for n in range(max(a.messages for a in world.accounts)):
        for account in world.accounts:
            if n < account.messages:
                messages.append(message(account, n, base + timedelta(minutes=n)))
            if n < account.comments:
                comments.append(comment(account, n, base + timedelta(minutes=n)))
    await insert(db, MESSAGES, messages)
    await insert(db, COMMENTS, comments)


async def snapshot(db: AsyncDatabase[Document]) -> dict[str, list[Document]]:
    return {name: await db[name].find({}, sort=[("_id", 1)]).to_list() for name in COLLECTIONS}


def of_accounts(docs: dict[str, list[Document]], *accounts: Account) -> dict[str, list[Document]]:
    ids = {a.account_id for a in accounts}
    return {n: [d for d in ds if d["instagram_account_id"] in ids] for n, ds in docs.items()}


def except_accounts(
    docs: dict[str, list[Document]], *accounts: Account
) -> dict[str, list[Document]]:
    ids = {a.account_id for a in accounts}
    return {n: [d for d in ds if d["instagram_account_id"] not in ids] for n, ds in docs.items()}


def assert_unchanged(before: dict[str, list[Document]], after: dict[str, list[Document]]) -> None:
    """The same documents, equal as dicts and as BSON bytes (field order and types too)."""
    assert after == before
    for name in COLLECTIONS:
        assert [bson.encode(d) for d in after[name]] == [bson.encode(d) for d in before[name]]


def counts(docs: dict[str, list[Document]]) -> dict[str, int]:
    return {name: len(ds) for name, ds in docs.items()}


def subject(kind: RequestKind, **resolution: list[str]) -> Subject:
    return Subject(
        request_id=uuid.uuid4(), kind=kind, identities={}, resolution=Resolution(**resolution)
    )


ZERO = {MESSAGES: 0, COMMENTS: 0}


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
async def mongo(mongodb_url: str) -> AsyncIterator[AsyncMongoClient[Document]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        mongodb_url, serverSelectionTimeoutMS=10_000
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def db(mongo: AsyncMongoClient[Document]) -> AsyncIterator[AsyncDatabase[Document]]:
    name = f"purge_{uuid.uuid4().hex[:8]}"
    try:
        yield mongo[name]
    finally:
        await mongo.drop_database(name)


@pytest.fixture
async def world(db: AsyncDatabase[Document]) -> World:
    world = new_world()
    await seed(db, world)
    return world


@pytest.fixture
def purger(mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document]) -> MongoPurger:
    return MongoPurger(mongo, db.name, soundops_mongo_map())


@pytest.fixture
def restart_ferretdb(ferretdb_server: FerretDBServer) -> Iterator[FerretDBServer]:
    """The local FerretDB, running again after the test whatever happened in it."""
    try:
        yield ferretdb_server
    finally:
        ferretdb_server.start()


# --- the three kinds -------------------------------------------------------------------


def test_mongo_purger_implements_the_purger_protocol(purger: MongoPurger) -> None:
    assert isinstance(purger, Purger)
    assert purger.name == "mongodb"


async def test_account_deletion_removes_the_tenants_messages_and_comments_only(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    before = await snapshot(db)
    theirs = of_accounts(before, world.band_main, world.band_side)
    assert counts(theirs) == {MESSAGES: 12, COMMENTS: 5}

    result = await purger.purge(subject(RequestKind.account, tenant_ids=[world.band]))

    assert result.deleted == counts(theirs)
    assert result.retained == {}
    after = await snapshot(db)
    assert of_accounts(after, world.band_main, world.band_side) == {MESSAGES: [], COMMENTS: []}
    # label_main shares band_main's Instagram user but belongs to another tenant: kept.
    assert_unchanged(except_accounts(before, world.band_main, world.band_side), after)
    assert await purger.verify(subject(RequestKind.account, tenant_ids=[world.band])) == ZERO


async def test_meta_data_deletion_removes_the_matched_accounts_and_instagram_user_only(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    # A request by the shared Instagram user resolved to two accounts, in two tenants.
    person = subject(
        RequestKind.meta_data,
        tenant_ids=[world.band, world.label],
        account_ids=[world.band_main.account_id, world.label_main.account_id],
        ig_user_ids=[world.band_main.ig_user_id],
        subject_ig_user_ids=[world.band_main.ig_user_id],
    )
    before = await snapshot(db)
    # Each document matches twice (its account and its Instagram user): counted once.
    assert (await purger.preview(person)).deleted == {MESSAGES: 7 + 4, COMMENTS: 3 + 4}

    result = await purger.purge(person)

    assert result.deleted == {MESSAGES: 7 + 4, COMMENTS: 3 + 4}
    after = await snapshot(db)
    assert of_accounts(after, world.band_main, world.label_main) == {MESSAGES: [], COMMENTS: []}
    # The band's other account (same tenant, other Instagram user) and the venue stay.
    kept = except_accounts(before, world.band_main, world.label_main)
    assert counts(of_accounts(kept, world.band_side)) == {MESSAGES: 5, COMMENTS: 2}
    assert_unchanged(kept, after)
    assert await purger.verify(person) == ZERO


async def test_meta_data_deletion_by_instagram_user_alone_reaches_every_tenant(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    before = await snapshot(db)

    # Documents whose connection rows are gone: only the Instagram user id finds them.
    ig = world.band_main.ig_user_id
    result = await purger.purge(
        subject(RequestKind.meta_data, ig_user_ids=[ig], subject_ig_user_ids=[ig])
    )

    assert result.deleted == {MESSAGES: 11, COMMENTS: 7}
    assert_unchanged(except_accounts(before, world.band_main, world.label_main), await snapshot(db))


async def test_meta_data_by_a_connection_never_reaches_another_tenants_same_instagram_user(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    # A person's Facebook id matched band_main only; label_main (another tenant) has the
    # same Instagram user: its documents are not the person's.
    person = subject(
        RequestKind.meta_data,
        tenant_ids=[world.band],
        account_ids=[world.band_main.account_id],
        ig_user_ids=[world.band_main.ig_user_id],
        shared_ig_user_ids=[world.band_main.ig_user_id],
    )
    before = await snapshot(db)

    result = await purger.purge(person)

    assert result.deleted == {MESSAGES: 7, COMMENTS: 3}
    after = await snapshot(db)
    assert of_accounts(after, world.band_main) == {MESSAGES: [], COMMENTS: []}
    assert counts(of_accounts(after, world.label_main)) == {MESSAGES: 4, COMMENTS: 4}
    assert_unchanged(except_accounts(before, world.band_main), after)
    assert await purger.verify(person) == ZERO


class FilterRecorder(monitoring.CommandListener):
    """The filters of every find, count and delete the server receives."""

    def __init__(self) -> None:
        self.filters: list[Any] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        if event.command_name in ("find", "count"):
            self.filters.append(command.get("filter", command.get("query")))
        elif event.command_name == "aggregate":
            self.filters += [stage["$match"] for stage in command["pipeline"] if "$match" in stage]
        elif event.command_name == "delete":
            self.filters += [d["q"] for d in command["deletes"]]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _operators(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {k for k in value if k.startswith("$")}
        for inner in value.values():
            found |= _operators(inner)
        return found
    if isinstance(value, list):
        return set().union(*map(_operators, value)) if value else set()
    return set()


async def test_selections_are_plain_equality_which_ferretdb_pushes_down(
    mongodb_url: str, db: AsyncDatabase[Document], world: World
) -> None:
    """FerretDB pushes down only equality; $in and $or scan the whole collection in Go."""
    recorder = FilterRecorder()
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_url, event_listeners=[recorder])
    try:
        purger = MongoPurger(client, db.name, soundops_mongo_map())
        ig = world.band_main.ig_user_id
        person = subject(
            RequestKind.meta_data,
            account_ids=[world.band_main.account_id, world.label_main.account_id],
            ig_user_ids=[ig],
            subject_ig_user_ids=[ig],
        )
        await purger.preview(person)
        result = await purger.purge(person)
        await purger.verify(person)
    finally:
        await client.close()
    assert result.deleted == {MESSAGES: 11, COMMENTS: 7}
    assert recorder.filters
    # Equality on the selected fields; only _id ranges bound a batch.
    assert set().union(*map(_operators, recorder.filters)) <= {"$lte"}


async def test_instagram_disconnect_removes_only_that_accounts_documents(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    # ig_user_ids and tenant_ids are resolved too, but disconnect selects by account only:
    # label_main (same Instagram user) and band_side (same tenant) are not touched.
    disconnect = subject(
        RequestKind.instagram_disconnect,
        tenant_ids=[world.band],
        account_ids=[world.band_main.account_id],
        ig_user_ids=[world.band_main.ig_user_id],
    )
    before = await snapshot(db)

    result = await purger.purge(disconnect)

    assert result.deleted == {MESSAGES: 7, COMMENTS: 3}
    after = await snapshot(db)
    assert of_accounts(after, world.band_main) == {MESSAGES: [], COMMENTS: []}
    assert_unchanged(except_accounts(before, world.band_main), after)
    assert await purger.verify(disconnect) == ZERO


# --- preview, idempotence, empty selections ---------------------------------------------


async def test_preview_counts_what_purge_then_deletes_and_deletes_nothing(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    account = subject(RequestKind.account, tenant_ids=[world.band])
    before = await snapshot(db)

    preview = await purger.preview(account)

    assert preview.deleted == {MESSAGES: 12, COMMENTS: 5}
    assert_unchanged(before, await snapshot(db))
    assert await purger.verify(account) == preview.deleted

    result = await purger.purge(account)

    assert result.deleted == preview.deleted
    assert (await purger.preview(account)).deleted == ZERO


async def test_purging_again_deletes_nothing_more_and_verifies_clean(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    account = subject(RequestKind.account, tenant_ids=[world.venue])
    first = await purger.purge(account)
    assert first.deleted == {MESSAGES: 6, COMMENTS: 5}
    between = await snapshot(db)

    again = await purger.purge(account)

    assert again.deleted == ZERO
    assert await purger.verify(account) == ZERO
    assert_unchanged(between, await snapshot(db))


@pytest.mark.parametrize("kind", list(RequestKind))
async def test_an_empty_resolution_deletes_nothing_and_verifies_clean(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger, kind: RequestKind
) -> None:
    before = await snapshot(db)
    nobody = subject(kind)

    assert (await purger.preview(nobody)).deleted == ZERO
    assert (await purger.purge(nobody)).deleted == ZERO
    assert await purger.verify(nobody) == ZERO
    assert_unchanged(before, await snapshot(db))


async def test_ids_that_match_nothing_delete_nothing(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    before = await snapshot(db)
    ig = _ig_user_id()
    stranger = subject(
        RequestKind.meta_data,
        account_ids=[str(uuid.uuid4())],
        ig_user_ids=[ig],
        subject_ig_user_ids=[ig],
    )

    assert (await purger.purge(stranger)).deleted == ZERO
    assert_unchanged(before, await snapshot(db))


async def test_collections_without_the_kind_are_not_touched(
    mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document], world: World
) -> None:
    only_accounts = MongoMap(
        collections={
            MESSAGES: Collection(
                kinds={RequestKind.account: [Match(field="tenant_id", within="tenant_ids")]}
            ),
            COMMENTS: Collection(unrelated="not mapped for any kind in this test"),
        }
    )
    purger = MongoPurger(mongo, db.name, only_accounts)
    before = await snapshot(db)

    result = await purger.purge(subject(RequestKind.account, tenant_ids=[world.band]))

    assert result.deleted == {MESSAGES: 12}
    after = await snapshot(db)
    assert after[COMMENTS] == before[COMMENTS]
    disconnect = subject(
        RequestKind.instagram_disconnect, account_ids=[world.venue_main.account_id]
    )
    with pytest.raises(PurgeNotApplicable, match="names no MongoDB collection"):
        await purger.purge(disconnect)
    assert await purger.verify(disconnect) == {}
    assert_unchanged(after, await snapshot(db))


# --- FerretDB's delete limit --------------------------------------------------------------


def test_no_batch_size_the_settings_accept_reaches_either_ferretdb_backends_limit() -> None:
    field = Settings.model_fields["mongodb_batch_size"]
    (cap,) = [m.le for m in field.metadata if isinstance(m, Le)]
    assert isinstance(cap, int)
    assert cap < min(FERRETDB_DELETE_LIMITS.values())


async def _is_ferretdb(db: AsyncDatabase[Document]) -> bool:
    info = await db.command("buildInfo")
    return "ferretdbVersion" in info or "ferretdb" in info


@pytest.mark.slow
async def test_more_matches_than_one_ferretdb_delete_allows_are_all_removed(
    mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document], world: World
) -> None:
    # Over the limit of both backends, so the refused batch below is refused on either;
    # the default batch size is under both (the purger's cap is the lower limit).
    many = 66_000
    assert many > max(FERRETDB_DELETE_LIMITS.values())
    assert MongoPurger(mongo, db.name, soundops_mongo_map()).batch_size < min(
        FERRETDB_DELETE_LIMITS.values()
    )
    stamp = datetime(2026, 11, 2, tzinfo=UTC)
    # One in 40 documents is another tenant's, spread through the whole _id range.
    docs = [
        message(world.venue_main if n % 40 == 39 else world.band_main, n, stamp)
        for n in range(many + many // 39 + 1)
    ]
    theirs = sum(d["tenant_id"] == world.band for d in docs)
    assert theirs >= many
    await insert(db, MESSAGES, docs)
    account = subject(RequestKind.account, tenant_ids=[world.band])
    before = await snapshot(db)

    if await _is_ferretdb(db):
        # One batch over the limit is what a single delete_many would be: the server
        # refuses it, the purger reports it as permanent, and nothing is deleted.
        messages_only = MongoMap(collections={MESSAGES: soundops_mongo_map().collections[MESSAGES]})
        too_big = MongoPurger(mongo, db.name, messages_only, batch_size=theirs + 12)
        with pytest.raises(PurgeFailed, match=r"^MongoDB error code \d+$"):
            await too_big.purge(account)
        assert_unchanged(before, await snapshot(db))

    purger = MongoPurger(mongo, db.name, soundops_mongo_map())  # the default batch size
    started = time.monotonic()
    result = await purger.purge(account)
    seconds = time.monotonic() - started

    assert result.deleted == {MESSAGES: theirs + 7 + 5, COMMENTS: 3 + 2}
    assert await purger.verify(account) == ZERO
    after = await snapshot(db)
    assert_unchanged(except_accounts(before, world.band_main, world.band_side), after)
    print(f"purged {theirs + 12} messages in {seconds:.1f} s")


class BatchRecorder(monitoring.CommandListener):
    """Per collection: how many ``find`` commands were sent, and what each delete removed."""

    def __init__(self) -> None:
        self.finds: dict[str, int] = {}
        self.deleted: dict[str, list[int]] = {}
        self._deletes: dict[int, str] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = str(event.command.get(event.command_name))
        if event.command_name == "find":
            self.finds[name] = self.finds.get(name, 0) + 1
        elif event.command_name == "delete":
            self._deletes[event.request_id] = name

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        name = self._deletes.pop(event.request_id, None)
        if name is not None:
            self.deleted.setdefault(name, []).append(event.reply["n"])

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._deletes.pop(event.request_id, None)


async def test_a_selection_is_read_once_and_deleted_in_batches_of_at_most_batch_size(
    mongodb_url: str, db: AsyncDatabase[Document], world: World
) -> None:
    stamp = datetime(2026, 11, 2, tzinfo=UTC)
    await insert(db, MESSAGES, [message(world.band_side, n, stamp) for n in range(1_000)])
    account = subject(RequestKind.account, tenant_ids=[world.band])
    before = await snapshot(db)
    recorder = BatchRecorder()
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_url, event_listeners=[recorder])
    try:
        purger = MongoPurger(client, db.name, soundops_mongo_map(), batch_size=300)
        result = await purger.purge(account)
        finds = dict(recorder.finds)
        assert await purger.verify(account) == ZERO
    finally:
        await client.close()

    assert result.deleted == {MESSAGES: 1_000 + 7 + 5, COMMENTS: 3 + 2}
    # One read of the _ids per collection (streamed), however many batches it bounds.
    assert finds == {MESSAGES: 1, COMMENTS: 1}
    assert recorder.deleted == {MESSAGES: [300, 300, 300, 112], COMMENTS: [5]}
    assert_unchanged(except_accounts(before, world.band_main, world.band_side), await snapshot(db))


async def test_ids_of_several_types_are_all_deleted_in_bounded_batches(
    mongodb_url: str, db: AsyncDatabase[Document], world: World
) -> None:
    # $lte compares within one BSON type: a round that leaves ids of another type reads again.
    stamp = datetime(2026, 11, 2, tzinfo=UTC)
    docs = [message(world.band_side, n, stamp) for n in range(9)]
    for n, doc in enumerate(docs):
        doc["_id"] = (n, f"id-{n}", bson.ObjectId())[n % 3]
    await insert(db, MESSAGES, docs)
    account = subject(RequestKind.account, tenant_ids=[world.band])
    before = await snapshot(db)
    recorder = BatchRecorder()
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_url, event_listeners=[recorder])
    try:
        purger = MongoPurger(client, db.name, soundops_mongo_map(), batch_size=4)
        result = await purger.purge(account)
        assert await purger.verify(account) == ZERO
    finally:
        await client.close()

    assert result.deleted == {MESSAGES: 9 + 7 + 5, COMMENTS: 3 + 2}
    assert max(n for batch in recorder.deleted.values() for n in batch) <= 4
    assert_unchanged(except_accounts(before, world.band_main, world.band_side), await snapshot(db))


class _FirstDeleteRaced:
    """A collection where someone else deletes the selection just before our first delete."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.name = collection.name
        self.raced = False

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.find(*args, **kwargs)

    async def delete_many(self, selection: Document) -> Any:
        if not self.raced:
            self.raced = True
            await self._collection.delete_many({k: v for k, v in selection.items() if k != "_id"})
        return await self._collection.delete_many(selection)


class _NeverDeletes(_FirstDeleteRaced):
    async def delete_many(self, selection: Document) -> Any:
        return await self._collection.delete_many({"_id": "no such document"})


async def test_documents_someone_else_deleted_first_are_not_a_failure(
    db: AsyncDatabase[Document], world: World
) -> None:
    raced = _FirstDeleteRaced(db[MESSAGES])
    selection = {"tenant_id": world.band}
    deleted = await delete_in_id_ranges(raced, selection, 30_000, MESSAGES)
    assert raced.raced
    assert deleted == 0
    assert await db[MESSAGES].count_documents(selection) == 0


async def test_documents_found_again_and_never_deleted_fail_instead_of_looping(
    db: AsyncDatabase[Document], world: World
) -> None:
    with pytest.raises(PurgeFailed, match="made no progress"):
        await delete_in_id_ranges(
            _NeverDeletes(db[MESSAGES]), {"tenant_id": world.band}, 30_000, MESSAGES
        )


# --- outages ---------------------------------------------------------------------------------


class StopServerAfterDeletes(monitoring.CommandListener):
    """Stops the server as soon as ``after`` delete commands have succeeded: the purge
    is cut off between two batches, deterministically."""

    def __init__(self, server: FerretDBServer, after: int) -> None:
        self.server = server
        self.after = after
        self.deletes = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == "delete":
            self.deletes += 1
            if self.deletes == self.after:
                self.server.stop()  # blocks the loop until the port is closed, on purpose

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.slow
async def test_a_purge_cut_off_by_an_outage_is_retriable_and_resumes(
    db: AsyncDatabase[Document], world: World, restart_ferretdb: FerretDBServer
) -> None:
    stamp = datetime(2026, 11, 3, tzinfo=UTC)
    extra = [message(world.band_side, n, stamp) for n in range(3_000)]
    await insert(db, MESSAGES, extra)
    account = subject(RequestKind.account, tenant_ids=[world.band])
    total = 3_000 + 12 + 5
    before = await snapshot(db)

    listener = StopServerAfterDeletes(restart_ferretdb, after=3)
    # The same client sees the outage and the recovery, as the service's client would.
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        restart_ferretdb.url, serverSelectionTimeoutMS=2_000, event_listeners=[listener]
    )
    try:
        purger = MongoPurger(client, db.name, soundops_mongo_map(), batch_size=500)
        with pytest.raises(PurgeRetriable) as cut:
            await purger.purge(account)
        assert listener.deletes == 3
        assert re.fullmatch(
            r"MongoDB unreachable: (AutoReconnect|ServerSelectionTimeoutError)", str(cut.value)
        )
        assert cut.value.__cause__ is None
        for value in (world.band, world.band_main.account_id, world.band_main.ig_user_id):
            assert value not in str(cut.value)

        restart_ferretdb.start()
        left = await purger.verify(account)
        assert 0 < sum(left.values()) < total  # cut off half-way, not before or after

        resumed = await purger.purge(account)

        assert resumed.deleted == left
        assert await purger.verify(account) == ZERO
    finally:
        # Closing a PyMongo async client whose monitor is still trying to connect leaks
        # that socket (a ResourceWarning): let it reconnect first.
        restart_ferretdb.start()
        await client.admin.command("ping")
        await client.close()
    assert_unchanged(except_accounts(before, world.band_main, world.band_side), await snapshot(db))


async def test_an_unreachable_server_is_retriable_and_names_no_identifier(
    db: AsyncDatabase[Document], world: World, restart_ferretdb: FerretDBServer
) -> None:
    person = subject(
        RequestKind.meta_data,
        account_ids=[world.band_side.account_id],
        ig_user_ids=[world.band_side.ig_user_id],
    )
    restart_ferretdb.stop()
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        restart_ferretdb.url, serverSelectionTimeoutMS=1_000
    )
    try:
        purger = MongoPurger(client, db.name, soundops_mongo_map())
        # One after the other: cancelling several operations that wait in server selection
        # at once can deadlock PyMongo's async client on Python 3.11 (see MongoPurger).
        calls = {
            "purge": lambda: purger.purge(person),
            "preview": lambda: purger.preview(person),
            "verify": lambda: purger.verify(person),
            "ping": purger.ping,
            "collection_names": purger.collection_names,
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(PurgeRetriable) as raised:
                await call()
            assert time.monotonic() - started < 5, name
            assert str(raised.value) == "MongoDB unreachable: ServerSelectionTimeoutError", name

        restart_ferretdb.start()
        # The same client recovers once the server is back.
        assert (await purger.purge(person)).deleted == {MESSAGES: 5, COMMENTS: 2}
    finally:
        restart_ferretdb.start()
        await client.admin.command("ping")  # see the cut-off test: no socket left connecting
        await client.close()


# --- readiness and the data-map check --------------------------------------------------------


async def test_ping_and_collection_names(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    await purger.ping()
    assert await purger.collection_names() == sorted(COLLECTIONS)


# --- how driver errors become outcomes --------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ServerSelectionTimeoutError("No servers found 10.0.0.7:27017"),
        AutoReconnect("connection closed"),
        NetworkTimeout("timed out"),
        NotPrimaryError("not primary", {}),
        ExecutionTimeout("operation exceeded time limit", code=50),
        OperationFailure("interrupted at shutdown", code=11600),
        OperationFailure("stepped down", code=189),
        OperationFailure("busy", code=462, details={"errorLabels": ["SystemOverloadedError"]}),
        WriteError("try again", code=112, details={"errorLabels": ["RetryableWriteError"]}),
    ],
)
def test_transient_driver_errors_are_retriable_with_the_class_name_only(
    error: PyMongoError,
) -> None:
    with pytest.raises(PurgeRetriable) as raised, mongo_errors():
        raise error
    assert str(raised.value) == f"MongoDB unreachable: {type(error).__name__}"
    assert raised.value.__cause__ is None


def test_other_server_errors_fail_with_the_code_only() -> None:
    secret = "17841400000000123"
    with pytest.raises(PurgeFailed) as raised, mongo_errors():
        raise WriteError(f'E11000 duplicate key {{ig_user_id: "{secret}"}}', code=11000)
    assert str(raised.value) == "MongoDB error code 11000"
    assert raised.value.__cause__ is None
    assert secret not in str(raised.value)


# --- third-party data subjects: what a person wrote to other accounts ------------------

FAN = "fan_1"  # wrote a comment on every account of the seeded world (three tenants)
MESSAGES_TP, COMMENTS_TP = f"{MESSAGES}.as_third_party", f"{COMMENTS}.as_third_party"


async def seed_fan_messages(db: AsyncDatabase[Document], world: World) -> None:
    """Messages the fan wrote to three tenants, and messages of other fans (one whose name
    only starts like it, one that differs only in case)."""
    base = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    docs = []
    for n, (account, writer) in enumerate(
        [
            (world.band_main, FAN),
            (world.label_main, FAN),
            (world.venue_main, FAN),
            (world.venue_main, "fan_11"),
            (world.band_side, "fan_2"),
            (world.label_main, "Fan_1x"),
        ]
    ):
        docs.append(message(account, 100 + n, base) | {"from_username": writer})
    await insert(db, MESSAGES, docs)


def written_by(docs: dict[str, list[Document]], username: str) -> dict[str, list[Document]]:
    return {n: [d for d in ds if d.get("from_username") == username] for n, ds in docs.items()}


def not_written_by(docs: dict[str, list[Document]], username: str) -> dict[str, list[Document]]:
    return {n: [d for d in ds if d.get("from_username") != username] for n, ds in docs.items()}


async def test_meta_data_by_username_deletes_what_the_fan_wrote_in_every_tenant_only(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    # A fan who was never a customer: no connection, only what they wrote.
    await seed_fan_messages(db, world)
    fan = subject(RequestKind.meta_data, third_party_usernames=[FAN])
    before = await snapshot(db)
    assert {d["tenant_id"] for d in written_by(before, FAN)[COMMENTS]} == {
        world.band,
        world.label,
        world.venue,
    }
    expected = {MESSAGES: 0, COMMENTS: 0, MESSAGES_TP: 3, COMMENTS_TP: 4}

    assert (await purger.preview(fan)).deleted == expected
    assert_unchanged(before, await snapshot(db))

    result = await purger.purge(fan)

    assert result.deleted == expected
    after = await snapshot(db)
    assert written_by(after, FAN) == {MESSAGES: [], COMMENTS: []}
    # Every other document of those tenants, other fans' included, is untouched.
    assert_unchanged(not_written_by(before, FAN), after)
    assert await purger.verify(fan) == ZERO


async def test_third_party_documents_are_counted_apart_and_once(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    # The fan also has a connection of their own (band_main): what they wrote there is
    # their own data, counted once, not as third-party data.
    await seed_fan_messages(db, world)
    person = subject(
        RequestKind.meta_data,
        account_ids=[world.band_main.account_id],
        third_party_usernames=[FAN],
    )
    expected = {MESSAGES: 7 + 1, COMMENTS: 3, MESSAGES_TP: 2, COMMENTS_TP: 3}

    assert (await purger.preview(person)).deleted == expected
    assert (await purger.purge(person)).deleted == expected
    assert (await purger.preview(person)).deleted == ZERO


async def test_a_third_party_document_left_fails_verification(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    fan = subject(RequestKind.meta_data, third_party_usernames=[FAN])
    await purger.purge(fan)
    # Written while the purge ran (or missed): verify finds it, so the task is retried.
    await insert(db, COMMENTS, [comment(world.venue_main, 1, datetime.now(UTC))])

    assert await purger.verify(fan) == {MESSAGES: 0, COMMENTS: 0, COMMENTS_TP: 1}


async def test_without_usernames_no_third_party_document_is_read_or_reached(
    db: AsyncDatabase[Document], world: World, purger: MongoPurger
) -> None:
    # A request by the Instagram user id (or a Facebook id, a Page name): no usernames.
    await seed_fan_messages(db, world)
    ig = world.venue_main.ig_user_id
    person = subject(RequestKind.meta_data, ig_user_ids=[ig], subject_ig_user_ids=[ig])
    before = await snapshot(db)

    assert set(purger.filters(person)) == {MESSAGES, COMMENTS}
    await purger.purge(person)

    assert_unchanged(except_accounts(before, world.venue_main), await snapshot(db))
