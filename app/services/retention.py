"""Retention guarantees: SoundOps' automatic deletion exists and has the promised length.

The SoundOps contract (``shared/soundops/README.md``, "Retention rules") promises that
Instagram messages and comments, and cached Instagram media, are deleted automatically
after 30 days. This module checks that promise against the live stores and, on request,
puts it in place. The rules are data (:data:`TTL_RULES`, :data:`LIFECYCLE_RULES`).

**MongoDB** (``settings.mongodb_database``): ``instagram_messages`` and
``instagram_comments`` each need a TTL index on ``created_at`` with
``expireAfterSeconds = 2592000``. ``check`` reads ``listIndexes`` and takes the
single-field index on ``created_at`` (one with ``expireAfterSeconds`` first):

- ``ok``: its ``expireAfterSeconds`` is 2592000 and it has no ``partialFilterExpression``;
- ``wrong``: another length, or a partial filter (documents outside it never expire);
- ``missing`` / ``unsupported``: no such index, or one without ``expireAfterSeconds``
  (a plain index expires nothing). Which of the two cannot be read from the server:
  FerretDB 1.24 accepts a plain ``created_at`` index, lists it without the option,
  and even names ``collMod`` in ``listCommands`` while answering it with code 238.
  So ``check`` asks the one question that decides it: it creates a TTL index on the
  scratch collection ``soundops_deletion_ttl_probe`` and drops that collection again
  (only ``readWrite`` is needed; SoundOps' own collections are never written by a
  check; the probe runs only when a TTL index is absent). An answer of code 238
  ``NotImplemented``, 115 ``CommandNotSupported`` or 59 ``CommandNotFound`` makes the
  item ``unsupported`` with the detail "unsupported by this server: <the server's
  message> (code N Name)"; success makes it ``missing``; any other refusal (say 13
  ``Unauthorized``) leaves it ``missing`` and names the code in the detail.

``apply`` creates a missing index with ``createIndexes`` (which also creates an absent
collection, so the TTL is there before the first document) and fixes an index without
the option or of another length with ``collMod`` (``index: {name, expireAfterSeconds}``;
adding the option to a plain index needs MongoDB 5.1 or later). A partial TTL index is
not rewritten (that needs a drop and a rebuild on a live collection): it stays ``wrong``
and the action says so.

**S3** (``soundops-ig-cache``): an *enabled* lifecycle rule covering the whole bucket
(no prefix, tag or size filter) that expires current objects after 30 days. The shortest
enabled whole-bucket expiry is what S3 applies, so it must be exactly 30 (a rule of 60
days, a fixed ``Date`` or only a disabled rule is ``wrong``; none at all is ``missing``).
Rules on other prefixes are counted in the report, not judged, and never touched.

Noncurrent versions and delete markers (the choice, documented): the contract says the
bucket is unversioned, and there a current-object expiry deletes for good. If versioning
was ever enabled (``Enabled`` or ``Suspended``; a bucket never returns to unversioned),
expiry only adds a delete marker and the data stays as a noncurrent version, so the
check then also requires noncurrent versions to expire within 30 days (without
``NewerNoncurrentVersions``, which would keep some forever) — otherwise ``wrong``.
``apply`` writes the full set whatever the versioning, so that enabling versioning later
cannot silently break the promise: its rule ``soundops-deletion-retention`` expires
current objects after 30 days, noncurrent versions 1 day after they become noncurrent,
and aborts incomplete multipart uploads (invisible parts of media) after 1 day; and a
second rule ``soundops-deletion-expired-delete-markers`` removes expired delete markers
at once (their keys name Instagram user ids; S3 does not allow that action in a rule
that has ``Days``, and would otherwise only remove them once they are 30 days old). On
a versioned bucket an object's data is therefore gone at most 31 days after upload,
plus S3's own lag (it rounds to the next midnight UTC and expires asynchronously).
``apply`` reads the configuration, changes only whole-bucket rules that expire current
objects (their other actions are kept), adds its rules when needed, and writes the merged
list back: rules of other prefixes are never dropped. It does not create a bucket that
does not exist (that is SoundOps' job): that item stays ``missing``.

**Statuses**: ``ok``, ``missing``, ``wrong``, ``unsupported`` (the server answers that it
cannot do it — never raised), ``not_configured`` (the store's settings are absent),
``unreachable`` (connection errors, timeouts, HTTP 5xx: the detail is the class name or
S3 error code only, because driver messages quote URLs), and ``error`` (any other
refusal, such as access denied: the code is named). ``check`` and ``apply`` raise only
for programming errors, never for a store's answer. Each store gets
:data:`STORE_TIMEOUT_SECONDS`, so a down MongoDB does not hold a report for PyMongo's
30-second server selection.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pymongo import ASCENDING
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from app.retention_status import RetentionStatus, RetentionStore
from app.settings import Settings
from app.stores import Stores

DAY_SECONDS = 86_400
RETENTION_DAYS = 30
STORE_TIMEOUT_SECONDS = 10.0
PROBE_COLLECTION = "soundops_deletion_ttl_probe"
# What a server answers for something it does not implement.
UNSUPPORTED_MONGO_CODES = {
    238: "NotImplemented",
    115: "CommandNotSupported",
    59: "CommandNotFound",
}
UNSUPPORTED_S3_CODES = frozenset({"NotImplemented", "NotSupported"})
TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling"}
)
VERSIONED = frozenset({"Enabled", "Suspended"})

T = TypeVar("T")


# Statuses that make a report fail (CLI exit code 1). ``unsupported`` and
# ``not_configured`` are reported clearly but are facts about the deployment, not faults.
FAILING = frozenset(
    {
        RetentionStatus.missing,
        RetentionStatus.wrong,
        RetentionStatus.unreachable,
        RetentionStatus.error,
    }
)
# What ``apply`` tries to change.
ACTIONABLE = frozenset(
    {RetentionStatus.missing, RetentionStatus.wrong, RetentionStatus.unsupported}
)


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


@dataclass(frozen=True)
class LifecycleRule:
    """A bucket whose objects expire ``expiration_days`` after upload (see the module doc)."""

    bucket: str
    expiration_days: int = RETENTION_DAYS
    noncurrent_days: int = 1
    abort_multipart_days: int = 1
    rule_id: str = "soundops-deletion-retention"
    delete_marker_rule_id: str = "soundops-deletion-expired-delete-markers"

    @property
    def expected(self) -> str:
        return (
            f"enabled whole-bucket lifecycle rule: objects expire after {self.expiration_days} "
            f"days (noncurrent versions too, if the bucket is versioned)"
        )

    def rule(self) -> dict[str, Any]:
        return {
            "ID": self.rule_id,
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "Expiration": {"Days": self.expiration_days},
            "NoncurrentVersionExpiration": {"NoncurrentDays": self.noncurrent_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": self.abort_multipart_days},
        }

    def delete_marker_rule(self) -> dict[str, Any]:
        return {
            "ID": self.delete_marker_rule_id,
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "Expiration": {"ExpiredObjectDeleteMarker": True},
        }


TTL_RULES: tuple[TtlRule, ...] = (TtlRule("instagram_messages"), TtlRule("instagram_comments"))
LIFECYCLE_RULES: tuple[LifecycleRule, ...] = (LifecycleRule("soundops-ig-cache"),)


@dataclass(frozen=True)
class RetentionItem:
    store: RetentionStore
    name: str
    expected: str
    status: RetentionStatus
    found: str | None = None
    detail: str | None = None
    action: str | None = None  # what ``apply`` did or tried


@dataclass(frozen=True)
class RetentionReport:
    items: list[RetentionItem]

    @property
    def ok(self) -> bool:
        """No item is missing, wrong, unreachable or in error."""
        return not any(item.status in FAILING for item in self.items)


# --- store errors -----------------------------------------------------------------------


def _mongo_unsupported(exc: OperationFailure) -> str:
    details = exc.details or {}
    message = str(details.get("errmsg") or "not implemented")
    name = details.get("codeName") or UNSUPPORTED_MONGO_CODES.get(exc.code or 0, "")
    return f"unsupported by this server: {message} (code {exc.code} {name})".rstrip()


def _failure(exc: BaseException) -> tuple[RetentionStatus, str] | None:
    """Status and detail for a store's error; None when it is not a store's error."""
    if isinstance(exc, OperationFailure):
        if exc.code in UNSUPPORTED_MONGO_CODES:
            return RetentionStatus.unsupported, _mongo_unsupported(exc)
        name = (exc.details or {}).get("codeName") or "error"
        return RetentionStatus.error, f"OperationFailure code {exc.code} ({name})"
    if isinstance(exc, ConnectionFailure):
        return RetentionStatus.unreachable, type(exc).__name__
    if isinstance(exc, PyMongoError):
        return RetentionStatus.error, type(exc).__name__
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in UNSUPPORTED_S3_CODES or status == 501:
            return (
                RetentionStatus.unsupported,
                f"unsupported by this server: {code} (HTTP {status})",
            )
        if code in TRANSIENT_S3_CODES or status >= 500:
            return RetentionStatus.unreachable, code
        return RetentionStatus.error, f"{code} (HTTP {status})"
    if isinstance(exc, HTTPClientError | BotoConnectionError | aiohttp.ClientError | OSError):
        return RetentionStatus.unreachable, type(exc).__name__  # includes TimeoutError
    if isinstance(exc, BotoCoreError):
        return RetentionStatus.error, type(exc).__name__
    return None


@dataclass(frozen=True)
class StoreFailure:
    """A store's error, as a status and a detail that is safe to show."""

    status: RetentionStatus
    detail: str


async def _attempt(work: Callable[[], Awaitable[T]]) -> T | StoreFailure:
    """``work()`` within the store timeout; a store's error becomes a StoreFailure."""
    try:
        async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
            return await work()
    except Exception as exc:
        failure = _failure(exc)
        if failure is None:
            raise
        return StoreFailure(*failure)


# --- MongoDB ------------------------------------------------------------------------------


def ttl_index(indexes: Sequence[Mapping[str, Any]], field: str) -> Mapping[str, Any] | None:
    """The single-field index on ``field`` (one with ``expireAfterSeconds`` first)."""
    candidates = [ix for ix in indexes if list(dict(ix.get("key", {}))) == [field]]
    with_ttl = [ix for ix in candidates if "expireAfterSeconds" in ix]
    chosen = with_ttl or candidates
    return chosen[0] if chosen else None


def judge_ttl(
    rule: TtlRule, indexes: Sequence[Mapping[str, Any]]
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


async def _indexes(db: Any, collection: str) -> list[Mapping[str, Any]]:
    cursor = await db[collection].list_indexes()
    return [index async for index in cursor]


async def probe_ttl_support(db: Any) -> tuple[RetentionStatus, str | None]:
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
        return RetentionStatus.unsupported, _mongo_unsupported(answer)
    name = (answer.details or {}).get("codeName") or "error"
    return RetentionStatus.missing, f"TTL support not probed: code {answer.code} ({name})"


async def _check_mongodb(db: Any, settings: Settings) -> list[RetentionItem]:
    judged = [(rule, *judge_ttl(rule, await _indexes(db, rule.collection))) for rule in TTL_RULES]
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


def _mongo_items(settings: Settings, status: RetentionStatus, detail: str) -> list[RetentionItem]:
    return [
        RetentionItem(
            RetentionStore.mongodb,
            f"{settings.mongodb_database}.{rule.collection}",
            rule.expected,
            status,
            detail=detail,
        )
        for rule in TTL_RULES
    ]


async def _fix_ttl(db: Any, rule: TtlRule) -> str:
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
        failure = _failure(exc)
        assert failure is not None
        return f"{command} refused: {failure[1]}"


# --- S3 -----------------------------------------------------------------------------------


def _whole_bucket(rule: Mapping[str, Any]) -> bool:
    if "Filter" in rule:
        filter_ = rule["Filter"] or {}
        return set(filter_) <= {"Prefix"} and not filter_.get("Prefix")
    return not rule.get("Prefix")


def _enabled(rule: Mapping[str, Any]) -> bool:
    return rule.get("Status") == "Enabled"


def _expires_current(rule: Mapping[str, Any]) -> bool:
    expiration = rule.get("Expiration") or {}
    return "Days" in expiration or "Date" in expiration


def _noncurrent_within(rule: Mapping[str, Any], days: int) -> bool:
    action = rule.get("NoncurrentVersionExpiration") or {}
    noncurrent = action.get("NoncurrentDays")
    return (
        noncurrent is not None and noncurrent <= days and not action.get("NewerNoncurrentVersions")
    )


def _describe(rule: Mapping[str, Any]) -> str:
    parts = []
    expiration = rule.get("Expiration") or {}
    if "Days" in expiration:
        parts.append(f"current objects expire after {expiration['Days']} days")
    if "Date" in expiration:
        parts.append(f"current objects expire on {expiration['Date']}")
    if expiration.get("ExpiredObjectDeleteMarker"):
        parts.append("expired delete markers removed")
    noncurrent = rule.get("NoncurrentVersionExpiration") or {}
    if "NoncurrentDays" in noncurrent:
        parts.append(f"noncurrent versions expire after {noncurrent['NoncurrentDays']} days")
    if rule.get("Transitions") or rule.get("NoncurrentVersionTransitions"):
        parts.append("transitions")
    status = "" if _enabled(rule) else f" ({rule.get('Status', 'no status')})"
    return f"rule {rule.get('ID') or '(no id)'}{status}: {', '.join(parts) or 'no action'}"


def judge_lifecycle(
    expected: LifecycleRule, rules: Sequence[Mapping[str, Any]], versioning: str | None
) -> tuple[RetentionStatus, str, str | None]:
    """Status, what was found (whole-bucket rules only: other rules' prefixes may hold ids,
    so they are only counted) and a detail."""
    whole = [rule for rule in rules if _whole_bucket(rule)]
    described = [_describe(rule) for rule in whole]
    others = len(rules) - len(whole)
    if others:
        described.append(f"{others} rule(s) on other prefixes or filters")
    if versioning:
        described.append(f"versioning {versioning}")
    found = "; ".join(described) or "no lifecycle rules"
    expiring = [rule for rule in whole if _enabled(rule) and _expires_current(rule)]
    if not expiring:
        if any(_expires_current(rule) for rule in whole):
            return RetentionStatus.wrong, found, "the whole-bucket expiry rule is not enabled"
        return RetentionStatus.missing, found, "nothing expires the bucket's objects"
    if any("Date" in rule["Expiration"] for rule in expiring):
        return RetentionStatus.wrong, found, "expiry on a fixed date, not after 30 days"
    days = min(int(rule["Expiration"]["Days"]) for rule in expiring)
    if days != expected.expiration_days:
        return (
            RetentionStatus.wrong,
            found,
            f"objects expire after {days} days, not {expected.expiration_days}",
        )
    if versioning in VERSIONED and not any(
        _enabled(rule) and _noncurrent_within(rule, expected.expiration_days) for rule in whole
    ):
        return (
            RetentionStatus.wrong,
            found,
            f"versioning is {versioning} and noncurrent versions do not expire within "
            f"{expected.expiration_days} days",
        )
    return RetentionStatus.ok, found, None


async def _lifecycle_rules(s3: Any, bucket: str) -> list[dict[str, Any]]:
    try:
        response = await s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return []
        raise
    return list(response.get("Rules", []))


async def _versioning(s3: Any, bucket: str) -> str | None:
    """The bucket's versioning status, or None when it was never versioned.

    Raises ClientError ``NoSuchBucket`` for a bucket that does not exist."""
    response = await s3.get_bucket_versioning(Bucket=bucket)
    status = response.get("Status")
    return str(status) if status else None


def _no_bucket(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "NoSuchBucket")


async def _check_bucket(s3: Any, expected: LifecycleRule) -> RetentionItem:
    try:
        versioning = await _versioning(s3, expected.bucket)
    except ClientError as exc:
        if not _no_bucket(exc):
            raise
        return RetentionItem(
            RetentionStore.s3,
            expected.bucket,
            expected.expected,
            RetentionStatus.missing,
            found="bucket does not exist",
            detail="apply does not create buckets",
        )
    rules = await _lifecycle_rules(s3, expected.bucket)
    status, found, detail = judge_lifecycle(expected, rules, versioning)
    return RetentionItem(
        RetentionStore.s3, expected.bucket, expected.expected, status, found=found, detail=detail
    )


def merge_lifecycle(
    expected: LifecycleRule, rules: Sequence[Mapping[str, Any]], versioning: str | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The bucket's rules with the expected retention in place, and what changed.

    Only enabled whole-bucket rules that expire current objects are changed (their
    expiry becomes ``expiration_days``; their other actions stay); every other rule is
    kept as it is."""
    merged = [copy.deepcopy(dict(rule)) for rule in rules]
    changes: list[str] = []
    target = {"Days": expected.expiration_days}
    for rule in merged:
        if _whole_bucket(rule) and _enabled(rule) and _expires_current(rule):
            if rule["Expiration"] != target:
                old = rule["Expiration"]
                was = f"{old['Days']} days" if "Days" in old else f"the date {old.get('Date')}"
                changes.append(
                    f"rule {rule.get('ID') or '(no id)'}: current objects now expire after "
                    f"{expected.expiration_days} days (was {was})"
                )
                rule["Expiration"] = dict(target)
            if versioning in VERSIONED and not _noncurrent_within(rule, expected.expiration_days):
                rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": expected.noncurrent_days}
                changes.append(
                    f"rule {rule.get('ID') or '(no id)'}: noncurrent versions expire after "
                    f"{expected.noncurrent_days} day(s)"
                )

    def put(new: dict[str, Any]) -> None:
        for index, rule in enumerate(merged):
            if rule.get("ID") == new["ID"]:
                merged[index] = new
                return
        merged.append(new)

    if not any(_whole_bucket(r) and _enabled(r) and _expires_current(r) for r in merged):
        put(expected.rule())
        changes.append(f"added rule {expected.rule_id}")
    if not any(
        _whole_bucket(r)
        and _enabled(r)
        and (r.get("Expiration") or {}).get("ExpiredObjectDeleteMarker")
        for r in merged
    ):
        put(expected.delete_marker_rule())
        changes.append(f"added rule {expected.delete_marker_rule_id}")
    return merged, changes


async def _fix_bucket(s3: Any, expected: LifecycleRule) -> str:
    try:
        versioning = await _versioning(s3, expected.bucket)
    except ClientError as exc:
        if _no_bucket(exc):
            return "not changed: the bucket does not exist"
        raise
    rules = await _lifecycle_rules(s3, expected.bucket)
    merged, changes = merge_lifecycle(expected, rules, versioning)
    if not changes:
        return "nothing to change"
    try:
        await s3.put_bucket_lifecycle_configuration(
            Bucket=expected.bucket, LifecycleConfiguration={"Rules": merged}
        )
    except ClientError as exc:
        failure = _failure(exc)
        assert failure is not None
        return f"PutBucketLifecycleConfiguration refused: {failure[1]}"
    kept = sum(1 for rule in rules if rule in merged)
    return "; ".join([*changes, f"{kept} other rule(s) kept unchanged"])


def _bucket_item(expected: LifecycleRule, status: RetentionStatus, detail: str) -> RetentionItem:
    return RetentionItem(
        RetentionStore.s3, expected.bucket, expected.expected, status, detail=detail
    )


# --- check and apply ----------------------------------------------------------------------


async def _check_mongodb_part(stores: Stores, settings: Settings) -> list[RetentionItem]:
    if stores.mongo is None:
        return _mongo_items(
            settings,
            RetentionStatus.not_configured,
            "MongoDB is not configured (DELETION_MONGODB_URL)",
        )
    db = stores.mongo[settings.mongodb_database]
    result = await _attempt(partial(_check_mongodb, db, settings))
    if isinstance(result, StoreFailure):
        return _mongo_items(settings, result.status, result.detail)
    return result


async def _check_bucket_part(stores: Stores, expected: LifecycleRule) -> RetentionItem:
    if stores.s3 is None:
        return _bucket_item(
            expected,
            RetentionStatus.not_configured,
            "S3 is not configured (DELETION_S3_ENDPOINT_URL or AWS credentials)",
        )
    result = await _attempt(partial(_check_bucket, stores.s3, expected))
    if isinstance(result, StoreFailure):
        return _bucket_item(expected, result.status, result.detail)
    return result


async def check(stores: Stores, settings: Settings) -> RetentionReport:
    """The retention rules as the live stores have them; never raises for a store's answer."""
    async with asyncio.TaskGroup() as tasks:
        mongo = tasks.create_task(_check_mongodb_part(stores, settings))
        buckets = [tasks.create_task(_check_bucket_part(stores, e)) for e in LIFECYCLE_RULES]
    return RetentionReport([*mongo.result(), *(task.result() for task in buckets)])


async def apply(stores: Stores, settings: Settings) -> RetentionReport:
    """Create what is missing and fix what is wrong, then check again.

    Acts on items that are ``missing``, ``wrong`` or ``unsupported`` (trying the real
    command there too, so that its answer is on record). The report is the fresh check,
    each item with ``action``: what was done or tried, with the server's answer when it
    refused. Never raises for a store's answer."""
    before = {(item.store, item.name): item for item in (await check(stores, settings)).items}
    actions: dict[tuple[RetentionStore, str], str] = {}
    if stores.mongo is not None:
        db = stores.mongo[settings.mongodb_database]
        for rule in TTL_RULES:
            key = (RetentionStore.mongodb, f"{settings.mongodb_database}.{rule.collection}")
            if before[key].status in ACTIONABLE:
                done = await _attempt(partial(_fix_ttl, db, rule))
                actions[key] = f"failed: {done.detail}" if isinstance(done, StoreFailure) else done
    if stores.s3 is not None:
        for expected in LIFECYCLE_RULES:
            key = (RetentionStore.s3, expected.bucket)
            if before[key].status in ACTIONABLE:
                done = await _attempt(partial(_fix_bucket, stores.s3, expected))
                actions[key] = f"failed: {done.detail}" if isinstance(done, StoreFailure) else done
    after = await check(stores, settings)
    return RetentionReport(
        [replace(item, action=actions.get((item.store, item.name))) for item in after.items]
    )
