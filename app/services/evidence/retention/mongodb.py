"""MongoDB: a TTL index per collection (see the package's docstring)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from app.retention_status import RetentionStatus, RetentionStore
from app.services.evidence.retention.report import (
    DAY_SECONDS,
    RETENTION_DAYS,
    UNSUPPORTED_MONGO_CODES,
    RetentionItem,
    mongo_unsupported,
    store_failure,
)
from app.settings import Settings

PROBE_COLLECTION = "soundops_deletion_ttl_probe"

# The MongoDB database of SoundOps' collections (``settings.mongodb_database``).
MongoDatabase = AsyncDatabase[Mapping[str, object]]
# One document of ``listIndexes``: ``key``, ``name``, and options such as
# ``expireAfterSeconds`` or ``partialFilterExpression``.
IndexDocument = Mapping[str, object]


@dataclass(frozen=True)
class TtlRule:
    """A MongoDB collection whose documents expire ``expire_after_seconds`` after ``field``."""

    collection: str
    field: str = "created_at"
    expire_after_seconds: int = RETENTION_DAYS * DAY_SECONDS

    @property
    def expected(self) -> str:
        days = self.expire_after_seconds / DAY_SECONDS
        return (
            f"TTL index on {self.field}, expireAfterSeconds={self.expire_after_seconds} "
            f"({days:g} days)"
        )


TTL_COLLECTIONS = ("instagram_messages", "instagram_comments")
# The rules with the contract's 30 days; ``ttl_rules`` gives them for the configured window.
TTL_RULES: tuple[TtlRule, ...] = tuple(TtlRule(name) for name in TTL_COLLECTIONS)


def ttl_rules(settings: Settings) -> tuple[TtlRule, ...]:
    """The TTL rules for ``DELETION_INSTAGRAM_RETENTION``."""
    seconds = int(settings.instagram_retention.total_seconds())
    return tuple(TtlRule(name, expire_after_seconds=seconds) for name in TTL_COLLECTIONS)


# --- MongoDB ------------------------------------------------------------------------------


def _index_fields(index: IndexDocument) -> list[str]:
    key = index.get("key", {})
    return list(key) if isinstance(key, Mapping) else []


def ttl_index(indexes: Sequence[IndexDocument], field: str) -> IndexDocument | None:
    """The single-field index on ``field`` (one with ``expireAfterSeconds`` first)."""
    candidates = [ix for ix in indexes if _index_fields(ix) == [field]]
    with_ttl = [ix for ix in candidates if "expireAfterSeconds" in ix]
    chosen = with_ttl or candidates
    return chosen[0] if chosen else None


def judge_ttl(
    rule: TtlRule, indexes: Sequence[IndexDocument]
) -> tuple[RetentionStatus | None, str]:
    """``ok``/``wrong`` and what was found; ``None`` when there is no TTL on the field
    (``missing`` or ``unsupported``, which only the server's answer decides)."""
    if not indexes:
        return None, "collection does not exist"
    index = ttl_index(indexes, rule.field)
    if index is None:
        return None, f"no index on {rule.field}"
    name = index.get("name", "?")
    seconds = index.get("expireAfterSeconds")
    if seconds is None:
        return None, f"index {name} without expireAfterSeconds (expires nothing)"
    found = f"index {name}, expireAfterSeconds={seconds}"
    if "partialFilterExpression" in index:
        return RetentionStatus.wrong, f"{found}, only for a partialFilterExpression"
    if seconds == rule.expire_after_seconds:
        return RetentionStatus.ok, found
    return RetentionStatus.wrong, found


async def _indexes(db: MongoDatabase, collection: str) -> list[IndexDocument]:
    cursor = await db[collection].list_indexes()
    return [index async for index in cursor]


async def probe_ttl_support(db: MongoDatabase) -> tuple[RetentionStatus, str | None]:
    """``missing`` when this server can create a TTL index, ``unsupported`` when it answers
    that it cannot. The probe collection is dropped again (also after a refusal: a server
    may create the collection before it looks at the index options)."""
    try:
        await db[PROBE_COLLECTION].create_index(
            [("created_at", ASCENDING)], expireAfterSeconds=RETENTION_DAYS * DAY_SECONDS
        )
    except OperationFailure as exc:
        answer: OperationFailure | None = exc
    else:
        answer = None
    await db.drop_collection(PROBE_COLLECTION)
    if answer is None:
        return RetentionStatus.missing, None
    if answer.code in UNSUPPORTED_MONGO_CODES:
        return RetentionStatus.unsupported, mongo_unsupported(answer)
    name = (answer.details or {}).get("codeName") or "error"
    return RetentionStatus.missing, f"TTL support not probed: code {answer.code} ({name})"


async def check_mongodb(db: MongoDatabase, settings: Settings) -> list[RetentionItem]:
    judged = [
        (rule, *judge_ttl(rule, await _indexes(db, rule.collection)))
        for rule in ttl_rules(settings)
    ]
    absent: tuple[RetentionStatus, str | None] | None = None
    if any(status is None for _, status, _ in judged):
        absent = await probe_ttl_support(db)
    items = []
    for rule, status, found in judged:
        detail = None
        if status is None:
            assert absent is not None
            status, detail = absent
        items.append(
            RetentionItem(
                RetentionStore.mongodb,
                f"{settings.mongodb_database}.{rule.collection}",
                rule.expected,
                status,
                found=found,
                detail=detail,
            )
        )
    return items


def mongo_items(settings: Settings, status: RetentionStatus, detail: str) -> list[RetentionItem]:
    return [
        RetentionItem(
            RetentionStore.mongodb,
            f"{settings.mongodb_database}.{rule.collection}",
            rule.expected,
            status,
            detail=detail,
        )
        for rule in ttl_rules(settings)
    ]


async def fix_ttl(db: MongoDatabase, rule: TtlRule) -> str:
    index = ttl_index(await _indexes(db, rule.collection), rule.field)
    seconds = rule.expire_after_seconds
    try:
        if index is None:
            name = await db[rule.collection].create_index(
                [(rule.field, ASCENDING)], expireAfterSeconds=seconds
            )
            return f"created TTL index {name} (expireAfterSeconds={seconds})"
        if "partialFilterExpression" in index:
            return f"not changed: index {index['name']} is partial; replace it by hand"
        await db.command(
            "collMod", rule.collection, index={"name": index["name"], "expireAfterSeconds": seconds}
        )
        return f"collMod: index {index['name']} set to expireAfterSeconds={seconds}"
    except OperationFailure as exc:
        command = "createIndexes" if index is None else "collMod"
        failure = store_failure(exc)
        assert failure is not None
        return f"{command} refused: {failure[1]}"
