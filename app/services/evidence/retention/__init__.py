"""Retention guarantees: SoundOps' automatic deletion exists and has the promised length.

The SoundOps contract (``shared/soundops/README.md``, "Retention rules") promises that
Instagram messages and comments, and cached Instagram media, are deleted automatically
after 30 days. This package checks that promise against the live stores and, on request,
puts it in place: :func:`check` and :func:`apply` here, one module per store (``mongodb``:
TTL indexes; ``s3``: lifecycle rules), and ``report`` (statuses, items, a store's errors).
The rules are data (``mongodb.TTL_RULES``, ``s3.LIFECYCLE_RULES``).

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
``report.STORE_TIMEOUT_SECONDS``, so a down MongoDB does not hold a report for PyMongo's
30-second server selection.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from functools import partial

from app.retention_status import RetentionStatus, RetentionStore
from app.services.evidence.retention.modes import with_modes
from app.services.evidence.retention.mongodb import check_mongodb, fix_ttl, mongo_items, ttl_rules
from app.services.evidence.retention.report import (
    ACTIONABLE,
    RetentionItem,
    RetentionReport,
    StoreFailure,
    attempt,
)
from app.services.evidence.retention.s3 import (
    LifecycleRule,
    bucket_item,
    check_bucket,
    fix_bucket,
    lifecycle_rules,
)
from app.settings import Settings
from app.stores import Stores

__all__ = [
    "RetentionItem",
    "RetentionReport",
    "RetentionStatus",
    "RetentionStore",
    "apply",
    "check",
]

# --- check and apply ----------------------------------------------------------------------


async def _check_mongodb_part(stores: Stores, settings: Settings) -> list[RetentionItem]:
    if stores.mongo is None:
        return mongo_items(
            settings,
            RetentionStatus.not_configured,
            "MongoDB is not configured (DELETION_MONGODB_URL)",
        )
    db = stores.mongo[settings.mongodb_database]
    result = await attempt(partial(check_mongodb, db, settings))
    if isinstance(result, StoreFailure):
        return mongo_items(settings, result.status, result.detail)
    return result


async def _check_bucket_part(stores: Stores, expected: LifecycleRule) -> RetentionItem:
    if stores.s3 is None:
        return bucket_item(
            expected,
            RetentionStatus.not_configured,
            "S3 is not configured (DELETION_S3_ENDPOINT_URL or AWS credentials)",
        )
    result = await attempt(partial(check_bucket, stores.s3, expected))
    if isinstance(result, StoreFailure):
        return bucket_item(expected, result.status, result.detail)
    return result


async def check(stores: Stores, settings: Settings) -> RetentionReport:
    """The retention rules as the live stores have them; never raises for a store's answer."""
    async with asyncio.TaskGroup() as tasks:
        mongo = tasks.create_task(_check_mongodb_part(stores, settings))
        buckets = [
            tasks.create_task(_check_bucket_part(stores, e)) for e in lifecycle_rules(settings)
        ]
    items = [*mongo.result(), *(task.result() for task in buckets)]
    return RetentionReport(with_modes(items, settings.retention_sweep))


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
        for rule in ttl_rules(settings):
            key = (RetentionStore.mongodb, f"{settings.mongodb_database}.{rule.collection}")
            if before[key].status in ACTIONABLE:
                done = await attempt(partial(fix_ttl, db, rule))
                actions[key] = f"failed: {done.detail}" if isinstance(done, StoreFailure) else done
    if stores.s3 is not None:
        for expected in lifecycle_rules(settings):
            key = (RetentionStore.s3, expected.bucket)
            if before[key].status in ACTIONABLE:
                done = await attempt(partial(fix_bucket, stores.s3, expected))
                actions[key] = f"failed: {done.detail}" if isinstance(done, StoreFailure) else done
    after = await check(stores, settings)
    return RetentionReport(
        [replace(item, action=actions.get((item.store, item.name))) for item in after.items]
    )
