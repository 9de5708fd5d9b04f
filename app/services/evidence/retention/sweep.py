"""The worker's own deletion of expired Instagram data, where the store's rule cannot be
trusted (see ``modes``): bounded batches, one cutoff per pass, nothing at or after it.

- MongoDB: ``created_at < cutoff`` in ``_id``-range batches of ``DELETION_MONGODB_BATCH_SIZE``
  (``delete_in_id_ranges``, the purger's FerretDB-safe loop: below 32,766 matches a batch).
- S3: the bucket listed in pages of 1,000 keys (each page from ``StartAfter`` the last key
  seen, so deleting never disturbs the listing), and ``DeleteObjects`` of the page's keys
  whose ``LastModified`` is before the cutoff. The cache bucket is unversioned (SoundOps'
  contract); on a versioned bucket this would add delete markers only, and the lifecycle
  rule's noncurrent expiry (``retention apply``) is what removes the data.

Each also measures the oldest document or object that is left (MongoDB: one sorted read
of ``created_at``, limit 1; S3: the listing already made), for
``deletion_retention_oldest_seconds``. Keys, ids and documents are never logged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING

from app.purgers.base import NO_PROGRESS, Progress
from app.purgers.mongodb import delete_in_id_ranges

S3_PAGE = 1000  # also DeleteObjects' limit


class SweepRefused(RuntimeError):
    """The store refused to delete some expired items (the message holds codes only)."""


def expired(cutoff: datetime) -> dict[str, Any]:
    """The documents the sweep deletes: created strictly before the cutoff."""
    return {"created_at": {"$lt": cutoff}}


async def sweep_collection(
    collection: Any, cutoff: datetime, batch_size: int, key: str, progress: Progress
) -> int:
    return await delete_in_id_ranges(collection, expired(cutoff), batch_size, key, progress)


async def oldest_document(collection: Any) -> datetime | None:
    """``created_at`` of the oldest document (documents without a date are not counted)."""
    cursor = collection.find(
        {"created_at": {"$type": "date"}},
        projection={"_id": False, "created_at": True},
        sort=[("created_at", ASCENDING)],
        limit=1,
    )
    found = await cursor.to_list()
    return found[0]["created_at"] if found else None


async def scan_bucket(
    s3: Any, bucket: str, cutoff: datetime | None, progress: Progress = NO_PROGRESS
) -> tuple[int, datetime | None]:
    """Delete the objects modified before ``cutoff`` (none when it is None); the count, and
    ``LastModified`` of the oldest object left."""
    deleted = 0
    oldest: datetime | None = None
    start_after = ""
    while True:
        page = await s3.list_objects_v2(Bucket=bucket, MaxKeys=S3_PAGE, StartAfter=start_after)
        contents: list[dict[str, Any]] = page.get("Contents") or []
        if not contents:
            return deleted, oldest
        old = [o["Key"] for o in contents if cutoff is not None and o["LastModified"] < cutoff]
        gone = set(old)
        kept = [o["LastModified"] for o in contents if o["Key"] not in gone]
        if old:
            deleted += await _delete_keys(s3, bucket, old, progress)
        if kept:
            oldest = min([*kept, *([oldest] if oldest else [])])
        start_after = contents[-1]["Key"]
        if not page.get("IsTruncated"):
            return deleted, oldest


async def _delete_keys(s3: Any, bucket: str, keys: list[str], progress: Progress) -> int:
    response = await s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True}
    )
    errors: list[dict[str, Any]] = response.get("Errors") or []
    done = len(keys) - len(errors)
    if done:
        await progress.deleted({bucket: done})
    if errors:
        codes = sorted({str(e.get("Code") or "Unknown") for e in errors})
        raise SweepRefused(
            f"S3 refused to delete {len(errors)} expired object(s) in {bucket}: {', '.join(codes)}"
        )
    return done
