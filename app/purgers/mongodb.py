"""MongoDB purger: deletes the subject's Instagram messages and comments.

What it deletes: for the request's kind, every document of each collection that the data
map's ``mongodb`` section maps for that kind, selected by the subject's resolution: a
document is the subject's when one of the collection's ``Match`` fields holds a value of
its resolved set. Each (field, value) is one plain equality filter, run one after the
other: FerretDB pushes only equality down to its SQL backend (``$in`` and ``$or`` scan
the whole collection in Go, ~60 times slower), and an index serves each on MongoDB. With
the SoundOps map that is

- ``account``: every message and comment of the tenant (``tenant_id``);
- ``meta_data``: those of the matched connections (``instagram_account_id``), and, only
  when the identity is the Instagram account itself (``subject_ig_user_ids``), those of
  that Instagram user (``ig_user_id``) in every tenant, also when the connection row is
  gone. A person's Facebook id or a Page name never reaches another tenant's connection
  of the same Instagram account;
- ``instagram_disconnect``: those of the one disconnected account.

A ``Match`` marked ``third_party`` (SoundOps: ``from_username`` within
``third_party_usernames``, only for a ``meta_data`` request by ``ig_username``) selects
what the person wrote to any tenant. Its documents are counted apart, under
``<collection>.as_third_party``: each is deleted after the subject's own documents, so a
document that is both (the person commenting on their own post) counts once, as their own;
the preview counts the union minus the own documents, by the same inclusion-exclusion.

What it keeps, and why: everything else. Other tenants' and other accounts' documents are
not the subject's; a collection the map does not name for the kind is never read or
written; collections and indexes (on MongoDB, the TTL index that removes anything 30 days
old) are left as they are. Nothing is retained for a legal reason, so ``retained`` is always empty.
A resolution with nothing to select (no ids for any match) deletes nothing: the request
is then about data that does not exist here, and that is a success, not an error.

How: in bounded batches (``DELETION_MONGODB_BATCH_SIZE``, default 30,000). Per collection
and filter, read the filter's ``_id`` values once, in ``_id`` order (streamed, keeping every
``batch_size``-th as a bound), then delete ``filter AND _id <= bound`` for each bound in
turn; read again only if that round left something it saw. One unbounded ``delete_many``
fails on FerretDB above 32,766 matches on its SQLite backend and 65,535 on its PostgreSQL
backend (see ``shared/spec/test-services.md``), a long ``$in`` of ``_id`` values is very
slow there, and on real MongoDB bounded batches keep each operation short and replication
lag low. FerretDB fetches every document a read's or a delete's equality matches (it
applies ``$lte``, sort and limit in Go), so one read per round rather than one per batch
saves a third of what a large purge fetches. An interrupted purge simply resumes: what is
deleted stays deleted, and the next run deletes the rest. No transactions are used
(FerretDB has none; none are needed).

Errors (their messages carry class names and codes only, never ids or document values):

- :class:`PurgeRetriable` (``"MongoDB unreachable: <class>"``): network errors, server
  selection and other timeouts, ``AutoReconnect`` / ``NotPrimaryError``, and server
  errors that are labelled retryable or carry a transient code (shutdown, step-down,
  host unreachable, ...);
- :class:`PurgeFailed` (``"MongoDB error code <code>"``): any other server error, for
  example FerretDB's ``InternalError`` (code 1) if ``batch_size`` is above its limit
  (keep it under 32,766, the lower of its two backends' limits); ``"MongoDB error
  (<class>)"`` for other driver errors; and a delete that makes no progress (documents
  found but not deleted) rather than looping forever;
- :class:`PurgeNotApplicable`: from ``purge`` when the map names no collection for the
  kind at all.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar

import pymongo
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
)

from app.datamap import DataMap, MongoMap
from app.purgers.base import (
    AS_THIRD_PARTY,
    NO_PROGRESS,
    NotConfigured,
    Progress,
    PurgeFailed,
    PurgeNotApplicable,
    PurgeResult,
    PurgeRetriable,
    PurgerName,
    Subject,
    third_party_key,
)
from app.settings import Settings
from app.stores import Stores

Document = dict[str, Any]
Filter = dict[str, Any]

# ``_id`` values per cursor batch when reading a selection's range bounds: bounds the
# memory of one read, whatever the selection's size, and keeps each batch's decoding (on
# the event loop, which short requests share) to a few milliseconds.
ID_READ_BATCH = 2_000

# Labels the server (or the driver) attaches to errors that are safe to try again.
RETRYABLE_LABELS = frozenset(
    {"RetryableWriteError", "RetryableError", "SystemOverloadedError", "TransientTransactionError"}
)
# Transient server codes (the retryable-writes and SDAM specifications), for servers and
# operations that do not label them.
RETRYABLE_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        134,  # ReadConcernMajorityNotAvailableYet
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10058,  # LegacyNotPrimary
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)


def _together(filters: tuple[Filter, ...]) -> Filter | None:
    """One filter that all of ``filters`` hold for; None when two want different values."""
    merged: Filter = {}
    for one in filters:
        for field, value in one.items():
            if merged.setdefault(field, value) != value:
                return None
    return merged


def _collection_of(key: str) -> str:
    """The collection of a key of ``filters`` (a collection, or its third-party key)."""
    return key.removesuffix(f".{AS_THIRD_PARTY}")


def _unreachable(exc: PyMongoError) -> PurgeRetriable:
    return PurgeRetriable(f"MongoDB unreachable: {type(exc).__name__}")


@contextmanager
def mongo_errors() -> Iterator[None]:
    """Translate PyMongo's exceptions into the purger outcomes.

    The original exception is not chained (``from None``): its message can quote a filter
    or a document, and outcome messages and their causes end up in logs.
    """
    try:
        yield
    except (ConnectionFailure, ExecutionTimeout) as exc:
        raise _unreachable(exc) from None
    except OperationFailure as exc:
        if exc.code in RETRYABLE_CODES or any(map(exc.has_error_label, RETRYABLE_LABELS)):
            raise _unreachable(exc) from None
        raise PurgeFailed(f"MongoDB error code {exc.code}") from None
    except PyMongoError as exc:
        if exc.timeout or any(map(exc.has_error_label, RETRYABLE_LABELS)):
            raise _unreachable(exc) from None
        raise PurgeFailed(f"MongoDB error ({type(exc).__name__})") from None


async def delete_in_id_ranges(
    collection: Any,
    selection: Filter,
    batch_size: int,
    key: str,
    progress: Progress = NO_PROGRESS,
) -> int:
    """Delete what ``selection`` matches in ``_id``-range batches (the FerretDB-safe way,
    see the module's docstring). Each round reads the selection's ``_id`` values once, in
    order, as a stream, and keeps every ``batch_size``-th of them and the last: the bounds.
    Then ``selection AND _id <= bound`` for each bound in turn deletes at most
    ``batch_size`` documents at a time. Each batch is reported to ``progress`` under ``key``
    (which may stop the work by raising). Returns how many were deleted.

    One read per round, not one per batch: FerretDB fetches every document the pushed-down
    equality matches for each read and each delete (limit and sort are applied in Go), so a
    read per batch doubled what it fetched. A round that deleted fewer than it saw (ids
    of mixed BSON types, which ``$lte`` compares within their type only) reads again; what
    arrives meanwhile, ``verify`` finds and the request is retried."""
    deleted: int = 0
    previous: list[Any] | None = None
    while True:
        bounds, seen = await _range_bounds(collection, selection, batch_size)
        if not seen:
            return deleted
        if bounds == previous:
            # The same documents are found again after a round that deleted none of them:
            # never loop forever.
            raise PurgeFailed(f"MongoDB delete in {collection.name} made no progress")
        this_round = 0
        for bound in bounds:
            result = await collection.delete_many({**selection, "_id": {"$lte": bound}})
            count: int = result.deleted_count
            this_round += count
            if count:
                await progress.deleted({key: count})
        deleted += this_round
        if this_round >= seen:
            return deleted
        # Deleted fewer than seen: ids of another type, or someone else deleted some first.
        previous = bounds if this_round == 0 else None


async def _range_bounds(
    collection: Any, selection: Filter, batch_size: int
) -> tuple[list[Any], int]:
    """Every ``batch_size``-th ``_id`` of ``selection`` in ``_id`` order, and the last one;
    and how many there were. Only one cursor batch of ids is held at a time."""
    bounds: list[Any] = []
    seen = 0
    last: Any = None
    cursor = collection.find(
        selection,
        projection={"_id": True},
        sort=[("_id", ASCENDING)],
        batch_size=min(batch_size, ID_READ_BATCH),
    )
    try:
        async for document in cursor:
            seen += 1
            last = document["_id"]
            if seen % batch_size == 0:
                bounds.append(last)
    finally:
        await cursor.close()
    if seen % batch_size:
        bounds.append(last)
    return bounds, seen


class MongoPurger:
    name: ClassVar[PurgerName] = PurgerName.mongodb

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        collections: MongoMap,
        batch_size: int = 30_000,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._db: AsyncDatabase[Document] = client[database]
        self._map = collections
        self.batch_size = batch_size

    @classmethod
    def build(
        cls, settings: Settings, datamap: DataMap, stores: Stores
    ) -> MongoPurger | NotConfigured:
        if stores.mongo is None:
            return NotConfigured("MongoDB (DELETION_MONGODB_URL)")
        return cls(
            stores.mongo,
            settings.mongodb_database,
            datamap.mongodb,
            batch_size=settings.mongodb_batch_size,
        )

    # --- selection ------------------------------------------------------------------

    def filters(self, subject: Subject) -> dict[str, list[list[Filter]]]:
        """Each collection mapped for the subject's kind, with its selection: per ``Match``
        that has values, one equality filter per value. A collection with nothing to select
        has an empty list; collections without the kind are absent. The selection of
        ``third_party`` matches follows, under ``<collection>.as_third_party``, when it
        has values."""
        selected: dict[str, list[list[Filter]]] = {}
        third: dict[str, list[list[Filter]]] = {}
        for name, collection in self._map.collections.items():
            matches = collection.kinds.get(subject.kind)
            if matches is None:
                continue
            groups: list[list[Filter]] = []
            for match in matches:
                values: list[str] = getattr(subject.resolution, match.within)
                if values:
                    group = [{match.field: value} for value in sorted(set(values))]
                    if match.third_party:
                        third.setdefault(third_party_key(name), []).append(group)
                    else:
                        groups.append(group)
            selected[name] = groups
        return selected | third

    # --- the Purger protocol ----------------------------------------------------------

    async def preview(self, subject: Subject) -> PurgeResult:
        return PurgeResult(deleted=await self._counts(subject))

    async def purge(self, subject: Subject) -> PurgeResult:
        filters = self.filters(subject)
        if not filters:
            raise PurgeNotApplicable(
                f"the data map names no MongoDB collection for {subject.kind} requests"
            )
        purge = partial(self._purge, progress=subject.progress)
        return PurgeResult(deleted=await self._per_collection(filters, purge))

    async def verify(self, subject: Subject) -> dict[str, int]:
        return await self._counts(subject)

    # --- readiness and data-map checks --------------------------------------------------

    async def ping(self) -> None:
        with mongo_errors():
            await self._db.command("ping")

    async def collection_names(self) -> list[str]:
        with mongo_errors():
            names = await self._db.list_collection_names()
        return sorted(names)

    # --- look-ups that change nothing ---------------------------------------------------

    async def finds_third_party(self, subject: Subject, *, within: float) -> bool:
        """Whether the subject's ``third_party`` matches alone select any document (e-mail
        intake: does anyone's data hold what a named person wrote?). One equality
        ``find_one`` (limit 1, ``_id`` only) per collection and value, pushed down on
        FerretDB, an index on MongoDB; stops at the first document found. ``within`` (seconds)
        bounds the whole look-up, server selection included (the driver's own operation
        timeout, so nothing is cancelled under it). Raises :class:`PurgeRetriable` when
        MongoDB does not answer within it, :class:`PurgeFailed` on a server error."""
        filters = self.filters(subject)
        with pymongo.timeout(within), mongo_errors():
            for key, groups in filters.items():
                name = _collection_of(key)
                if name == key:
                    continue  # the subject's own documents: not asked here
                for one in itertools.chain.from_iterable(groups):
                    if await self._db[name].find_one(one, projection={"_id": True}):
                        return True
        return False

    # --- internals ---------------------------------------------------------------------

    async def _counts(self, subject: Subject) -> dict[str, int]:
        filters = self.filters(subject)

        async def count(key: str, groups: list[list[Filter]]) -> int:
            name = _collection_of(key)
            if name == key:
                return await self._count(name, groups)
            # What only the third-party matches select: the union less the own documents.
            own = filters.get(name, [])
            return await self._count(name, own + groups) - await self._count(name, own)

        return await self._per_collection(filters, count)

    async def _per_collection(
        self,
        filters: dict[str, list[list[Filter]]],
        work: Callable[[str, list[list[Filter]]], Coroutine[Any, Any, int]],
    ) -> dict[str, int]:
        """``work`` on every collection that has something to select; 0 for the others.

        One collection after the other, on purpose. Concurrently is faster on FerretDB
        (2 x 36,000 documents: 12-14 s instead of 17-18 s), but a TaskGroup cancels the
        siblings of a failed operation, and with PyMongo 4.20 on Python 3.11, cancelling
        two or more operations that wait in server selection (MongoDB down) deadlocks in
        the driver: those tasks never finish, not even when cancelled again, so a worker
        would hang with its lease kept alive. Sequential operations never cancel each other.
        """
        results: dict[str, int] = {}
        for name, groups in filters.items():
            count = await work(name, groups) if groups else 0
            if count or _collection_of(name) == name:
                # A third-party count is named only when there is some: most requests
                # have none, and their counts keep their form.
                results[name] = count
        return results

    async def _count(self, name: str, groups: list[list[Filter]]) -> int:
        """Documents that any filter selects, each counted once, with equality filters only.

        Within a group the filters are disjoint (one field, different values); across
        groups a document can match twice (its connection's id and its Instagram user's
        id), so the union is counted by inclusion and exclusion: add each group's
        documents, subtract those that two groups select (both equalities at once, still
        pushed down), add those of three, and so on; a document that any number of groups
        select is counted once. Groups are one or two in the SoundOps map.
        """
        total = 0
        with mongo_errors():
            for size in range(1, len(groups) + 1):
                sign = 1 if size % 2 else -1
                for chosen in itertools.combinations(groups, size):
                    for parts in itertools.product(*chosen):
                        both = _together(parts)
                        if both is not None:
                            total += sign * await self._db[name].count_documents(both)
        return total

    async def _purge(
        self, key: str, groups: list[list[Filter]], progress: Progress = NO_PROGRESS
    ) -> int:
        deleted = 0
        with mongo_errors():
            for group in groups:
                for one in group:
                    deleted += await self._purge_batches(key, one, progress)
        return deleted

    async def _purge_batches(
        self, key: str, selection: Filter, progress: Progress = NO_PROGRESS
    ) -> int:
        """Delete in ``_id``-range batches; counts are reported under ``key`` (the
        collection, or its ``.as_third_party`` key)."""
        collection = self._db[_collection_of(key)]
        return await delete_in_id_ranges(collection, selection, self.batch_size, key, progress)
