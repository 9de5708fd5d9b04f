"""The S3 purger: every object version and delete marker under the subject's prefixes.

What it deletes: for each bucket of the data map's ``s3`` section whose ``kinds``
name the request's kind, each prefix template is expanded with the subject's
resolution (``tenants/{tenant_id}/`` -> one prefix per tenant id), and under every
such prefix it removes **every version of every object and every delete marker**
(``ListObjectVersions`` + ``DeleteObjects`` with explicit version ids). On a
versioned bucket a plain delete only hides the data behind a new delete marker,
so nothing here ever deletes without a version id; on an unversioned bucket S3
lists each object once with version id ``null``, and the same code applies.
Deletes go in batches of at most 1,000 keys (S3's limit), and after each batch the
listing starts again from the beginning: continuing a listing across deletes
skips keys on some servers (moto), and a fresh listing is correct on real S3 too.

What it keeps, and why:

- an ``{ig_user_id}`` prefix of an Instagram account that a connection outside the
  request still has (``shared_ig_user_ids``): the cache is keyed by the Instagram
  account, not by a connection, so deleting it would reach another tenant's
  connection. It is reported as ``retained`` (versions counted, per bucket) with the
  bucket's ``shared`` reason, and expires under the bucket's lifecycle rule;
- everything outside the prefixes. Every prefix must end in ``/`` and every id it
  is built from must be non-empty and free of ``/``, so ``tenants/abc/`` can never
  reach ``tenants/abcdef/`` and an empty id can never widen a prefix to a whole
  folder or bucket; a violation stops the purge before anything is deleted;
- buckets whose ``kinds`` do not name the request's kind (``meta_data`` leaves
  ``soundops-media``; ``instagram_disconnect`` touches no bucket, cached media
  expires by the bucket's lifecycle rule);
- an empty resolution means no prefixes, so nothing is deleted.

Errors (messages name bucket names and S3 error codes, never object keys, which
contain tenant and Instagram ids; botocore's own exceptions are not chained,
because their messages quote request URLs with the prefix in them):

- :class:`PurgeRetriable` ``"S3 unreachable: <class or code>"``: connection
  errors and timeouts, HTTP 5xx and throttling (``SlowDown``...) answers; also
  when single keys of a batch keep failing with such codes after a few retries;
- :class:`PurgeFailed`: ``"bucket <name> does not exist"``, access denied, a key
  that S3 refuses to delete for another reason (``AccessDenied`` from a bucket
  policy or object lock: the codes and their counts are named), a prefix or id
  that fails the guards above, or a listing that contradicts itself.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, ClassVar, TypeVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from app.datamap import DataMap, S3Map, expand
from app.purgers.base import (
    NO_PROGRESS,
    NotConfigured,
    Progress,
    PurgeFailed,
    PurgeResult,
    PurgeRetriable,
    PurgerName,
    Retained,
    Subject,
)
from app.settings import Settings
from app.stores import Stores

# S3 accepts at most 1,000 keys per DeleteObjects request (moto does not enforce it).
DELETE_BATCH = 1000
LIST_PAGE = 1000
# Per-key DeleteObjects error codes and whole-request codes worth trying again.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)

Version = tuple[str, str]  # (Key, VersionId)
T = TypeVar("T")


def _code_counts(codes: Iterable[str]) -> str:
    return ", ".join(f"{code} x{n}" for code, n in sorted(Counter(codes).items()))


def _translate(exc: BaseException, bucket: str | None) -> Exception | None:
    """Our outcome type for a driver exception, or None when it is not an S3 problem."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        where = f" on bucket {bucket}" if bucket else ""
        if code in TRANSIENT_CODES or status >= 500:
            return PurgeRetriable(f"S3 unreachable: {code}")
        if code == "NoSuchBucket":
            return PurgeFailed(f"bucket {bucket} does not exist")
        if code in {"AccessDenied", "AllAccessDisabled"} or status == 403:
            return PurgeFailed(f"S3 access denied{where} ({code})")
        return PurgeFailed(f"S3 error {code} (HTTP {status}){where}")
    if isinstance(exc, HTTPClientError | BotoConnectionError | aiohttp.ClientError | TimeoutError):
        return PurgeRetriable(f"S3 unreachable: {type(exc).__name__}")
    if isinstance(exc, BotoCoreError):
        return PurgeFailed(f"S3 client error: {type(exc).__name__}")
    return None


def _most_severe(errors: list[BaseException]) -> BaseException:
    """Of the errors of concurrent units: a permanent failure wins over a transient one."""

    def rank(exc: BaseException) -> int:
        if not isinstance(exc, Exception):
            return 0  # cancellation and the like: propagate as they are
        if isinstance(exc, PurgeRetriable):
            return 3
        if isinstance(exc, PurgeFailed):
            return 1
        return 2

    return min(errors, key=rank)


class S3Purger:
    name: ClassVar[PurgerName] = PurgerName.s3

    def __init__(
        self,
        client: Any,
        buckets: S3Map,
        concurrency: int = 4,
        *,
        key_retries: int = 3,
        retry_base_seconds: float = 0.2,
    ) -> None:
        """``client``: an entered aiobotocore S3 client. ``concurrency`` bounds the
        prefixes worked on at once, across all calls on this purger."""
        if concurrency < 1 or key_retries < 0:
            raise ValueError("concurrency must be at least 1 and key_retries at least 0")
        self._client = client
        self._buckets = buckets
        self._semaphore = asyncio.Semaphore(concurrency)
        self._key_retries = key_retries
        self._retry_base = retry_base_seconds

    @classmethod
    def build(
        cls, settings: Settings, datamap: DataMap, stores: Stores
    ) -> S3Purger | NotConfigured:
        if stores.s3 is None:
            return NotConfigured("S3 (DELETION_S3_ENDPOINT_URL or AWS credentials)")
        return cls(stores.s3, datamap.s3)

    # --- the Purger protocol ------------------------------------------------------

    async def preview(self, subject: Subject) -> PurgeResult:
        """Versions and delete markers under the subject's prefixes, per bucket."""
        deleted = await self._per_bucket(self.prefixes(subject), self._count)
        return PurgeResult(deleted=deleted, retained=await self._retained(subject))

    async def purge(self, subject: Subject) -> PurgeResult:
        """Delete them; returns how many versions and delete markers were removed."""
        purge = partial(self._purge_prefix, progress=subject.progress)
        deleted = await self._per_bucket(self.prefixes(subject), purge)
        return PurgeResult(deleted=deleted, retained=await self._retained(subject))

    async def verify(self, subject: Subject) -> dict[str, int]:
        """Versions and delete markers still under the subject's prefixes (0 when done)."""
        return await self._per_bucket(self.prefixes(subject), self._count)

    async def _retained(self, subject: Subject) -> dict[str, Retained]:
        """Per bucket with shared prefixes: their versions (when there are any), kept with
        the bucket's reason."""
        shared = {bucket: p for bucket, p in self.prefixes(subject, shared=True).items() if p}
        counts = await self._per_bucket(shared, self._count)
        return {
            bucket: Retained(count, self._buckets.buckets[bucket].shared)
            for bucket, count in counts.items()
            if count
        }

    # --- for readiness and the data-map check -------------------------------------

    async def ping(self) -> None:
        await self._call(None, self._client.list_buckets)

    async def bucket_names(self) -> list[str]:
        response = await self._call(None, self._client.list_buckets)
        return sorted(str(b["Name"]) for b in response.get("Buckets", []))

    # --- prefixes -------------------------------------------------------------------

    def prefixes(self, subject: Subject, *, shared: bool = False) -> dict[str, list[str]]:
        """Bucket -> prefixes for the subject; every bucket of the subject's kind is a key.

        ``shared=True``: the prefixes kept instead, because another connection outside the
        request still has their Instagram account."""
        resolution = subject.resolution
        for ids in (resolution.tenant_ids, resolution.account_ids, resolution.ig_user_ids):
            for value in ids:
                if not value or "/" in value or value != value.strip():
                    raise PurgeFailed("the resolution holds an empty id or one with '/' or spaces")
        result: dict[str, list[str]] = {}
        for bucket, spec in self._buckets.buckets.items():
            templates = spec.kinds.get(subject.kind)
            if templates is None:
                continue
            candidates: set[str] = set()
            for template in templates:
                reached, kept_shared = expand(template, resolution)
                for prefix in kept_shared if shared else reached:
                    if not prefix or not prefix.endswith("/") or prefix.strip("/") == "":
                        raise PurgeFailed(
                            f"bucket {bucket}: a prefix template gives an unsafe prefix"
                        )
                    candidates.add(prefix)
            # A prefix inside another one of the same bucket would be counted twice.
            kept: list[str] = []
            for prefix in sorted(candidates):
                if not any(prefix.startswith(outer) for outer in kept):
                    kept.append(prefix)
            result[bucket] = kept
        return result

    async def _per_bucket(
        self, plan: dict[str, list[str]], work: Callable[[str, str], Awaitable[int]]
    ) -> dict[str, int]:
        units = [(bucket, prefix) for bucket, prefixes in plan.items() for prefix in prefixes]

        async def bounded(bucket: str, prefix: str) -> int:
            async with self._semaphore:
                return await work(bucket, prefix)

        # Every unit runs to its end (a failing prefix does not stop the others' deletes).
        outcomes = await asyncio.gather(
            *(bounded(bucket, prefix) for bucket, prefix in units), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            raise _most_severe(errors)
        totals = dict.fromkeys(plan, 0)
        for (bucket, _), outcome in zip(units, outcomes, strict=True):
            assert isinstance(outcome, int)
            totals[bucket] += outcome
        return totals

    # --- S3 calls -------------------------------------------------------------------

    async def _call(self, bucket: str | None, method: Callable[..., Awaitable[T]], **kw: Any) -> T:
        try:
            return await method(**kw)
        except Exception as exc:
            translated = _translate(exc, bucket)
            if translated is None:
                raise
            raise translated from None

    async def _list_page(
        self, bucket: str, prefix: str, marker: Version | None, max_keys: int
    ) -> tuple[list[Version], Version | None]:
        """One page of versions and delete markers; the marker of the next page or None."""
        kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if marker is not None:
            kw["KeyMarker"], kw["VersionIdMarker"] = marker
        response = await self._call(bucket, self._client.list_object_versions, **kw)
        entries: list[Version] = []
        for item in (*response.get("Versions", []), *response.get("DeleteMarkers", [])):
            key = str(item["Key"])
            if not key.startswith(prefix):
                raise PurgeFailed(f"bucket {bucket}: the listing returned a key outside the prefix")
            # Never delete without a version id: on a versioned bucket that adds a marker.
            entries.append((key, str(item.get("VersionId") or "null")))
        if not response.get("IsTruncated"):
            return entries, None
        next_key = response.get("NextKeyMarker")
        if not next_key:
            raise PurgeFailed(f"bucket {bucket}: a truncated listing without a next marker")
        return entries, (str(next_key), str(response.get("NextVersionIdMarker") or ""))

    async def _count(self, bucket: str, prefix: str) -> int:
        total = 0
        marker: Version | None = None
        while True:
            entries, marker = await self._list_page(bucket, prefix, marker, LIST_PAGE)
            total += len(entries)
            if marker is None:
                return total

    async def _first_entries(self, bucket: str, prefix: str, limit: int) -> list[Version]:
        """Up to ``limit`` versions and markers, listed from the start of the prefix."""
        found: list[Version] = []
        marker: Version | None = None
        while len(found) < limit:
            entries, marker = await self._list_page(bucket, prefix, marker, limit - len(found))
            found.extend(entries)
            if marker is None:
                break
        return found[:limit]

    async def _purge_prefix(
        self, bucket: str, prefix: str, progress: Progress = NO_PROGRESS
    ) -> int:
        removed = 0
        previous: set[Version] = set()
        while True:
            batch = await self._first_entries(bucket, prefix, DELETE_BATCH)
            if not batch:
                return removed
            if previous.intersection(batch):
                raise PurgeFailed(f"bucket {bucket}: versions reported deleted are still listed")
            removed += await self._delete_batch(bucket, batch, progress)
            previous = set(batch)

    async def _delete_batch(
        self, bucket: str, batch: list[Version], progress: Progress = NO_PROGRESS
    ) -> int:
        """Delete up to 1,000 versions; retry keys that fail transiently. Returns the count."""
        if not 0 < len(batch) <= DELETE_BATCH:
            raise ValueError(f"a delete batch holds 1 to {DELETE_BATCH} versions")
        pending = batch
        removed = 0
        for attempt in range(self._key_retries + 1):
            if attempt:
                ceiling = self._retry_base * 2 ** (attempt - 1)
                await asyncio.sleep(ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311
            response = await self._call(
                bucket,
                self._client.delete_objects,
                Bucket=bucket,
                Delete={
                    "Objects": [{"Key": key, "VersionId": vid} for key, vid in pending],
                    "Quiet": True,
                },
            )
            errors: list[dict[str, Any]] = response.get("Errors") or []
            # Quiet=True: only errors are reported (moto reports the deleted ones too).
            failed = self._failed_entries(pending, errors)
            removed += len(pending) - len(failed)
            if len(pending) > len(failed):  # deleted, also when the rest failed
                await progress.deleted({bucket: len(pending) - len(failed)})
            codes = [str(e.get("Code") or "Unknown") for e in errors]
            permanent = [code for code in codes if code not in TRANSIENT_CODES]
            if permanent:
                raise PurgeFailed(
                    f"S3 refused to delete {len(failed)} object version(s) in bucket {bucket}: "
                    f"{_code_counts(codes)}"
                )
            if not failed:
                return removed
            pending = failed
        raise PurgeRetriable(
            f"S3 unreachable: {_code_counts(codes)} for {len(pending)} object version(s) "
            f"in bucket {bucket} after {self._key_retries} retries"
        )

    @staticmethod
    def _failed_entries(pending: list[Version], errors: list[dict[str, Any]]) -> list[Version]:
        """The entries of ``pending`` that an error names (by key and version when given)."""
        exact = {(str(e.get("Key")), str(e["VersionId"])) for e in errors if e.get("VersionId")}
        whole_keys = {str(e.get("Key")) for e in errors if not e.get("VersionId")}
        return [entry for entry in pending if entry in exact or entry[0] in whole_keys]
