"""The S3 purger against a real moto server: versions, delete markers, batches, outages.

Seed (``seed``), per the SoundOps contract: ``soundops-media`` (versioning enabled)
holds three tenants' uploads and site files with several versions and delete
markers; ``soundops-ig-cache`` (versioning off) holds cached media of four
Instagram accounts. Traps: tenant ``{A}extra`` and Instagram user ``{IG_A1}9``
have ids of which A's are string prefixes, so a prefix without its trailing
``/`` would reach them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from app.datamap import Bucket, Resolution, S3Map, load_datamap
from app.models import RequestKind
from app.purgers.base import PurgeFailed, Purger, PurgeResult, PurgeRetriable, Retained, Subject
from app.purgers.s3 import S3Purger
from testsupport.harness.services import MotoServer

MEDIA = "soundops-media"
CACHE = "soundops-ig-cache"
S3_MAP = load_datamap().s3  # the bundled data map's buckets and prefixes

TENANT_A = "8d0f5a52-9c1e-4d5b-a0b1-3e6f2a7c9d10"  # two Instagram accounts
TENANT_A_SIBLING = f"{TENANT_A}extra"  # A's id is a string prefix of this one
TENANT_C = "2b7e4c11-5f0a-4e8e-9d3c-7a1b6c0e5f42"  # shares nothing with A
IG_A = ["17841400000000001", "17841400000000002"]
IG_SIBLING = "178414000000000019"  # IG_A[0] is a string prefix of it
IG_C = "17841499999999999"
ALL_IG = [*IG_A, IG_SIBLING, IG_C]

# What the seed puts under one tenant: versions + delete markers.
PER_TENANT = 12
PER_IG = 3

Entry = tuple[str, str, str, bool]  # (Key, VersionId, ETag or "marker", IsLatest)


def subject(
    kind: RequestKind, *, tenants: list[str] | None = None, igs: list[str] | None = None
) -> Subject:
    resolution = Resolution(tenant_ids=tenants or [], ig_user_ids=igs or [])
    return Subject(request_id=uuid.uuid4(), kind=kind, identities={}, resolution=resolution)


ACCOUNT_A = subject(RequestKind.account, tenants=[TENANT_A], igs=IG_A)


async def put(client: Any, bucket: str, key: str, body: str) -> None:
    await client.put_object(Bucket=bucket, Key=key, Body=body.encode())


async def seed(client: Any) -> None:
    await client.create_bucket(Bucket=MEDIA)
    await client.put_bucket_versioning(Bucket=MEDIA, VersioningConfiguration={"Status": "Enabled"})
    await client.create_bucket(Bucket=CACHE)

    async def tenant_files(tenant: str) -> None:
        base = f"tenants/{tenant}/"
        for take in range(3):  # 3 versions
            await put(client, MEDIA, f"{base}uploads/song-1.mp3", f"{tenant} take {take}")
        for take in range(2):  # 2 versions
            await put(client, MEDIA, f"{base}uploads/cover.jpg", f"{tenant} cover {take}")
        await put(client, MEDIA, f"{base}uploads/old.wav", f"{tenant} old")
        await client.delete_object(Bucket=MEDIA, Key=f"{base}uploads/old.wav")  # + marker
        for take in range(2):
            await put(client, MEDIA, f"{base}site/index.html", f"{tenant} page {take}")
        await client.delete_object(Bucket=MEDIA, Key=f"{base}site/index.html")  # + marker
        await put(client, MEDIA, f"{base}site/index.html", f"{tenant} page again")
        await put(client, MEDIA, f"{base}site/style.css", f"{tenant} css")

    async def cached_media(ig: str) -> None:
        for n in range(PER_IG):
            await put(client, CACHE, f"instagram/{ig}/media/{n}.jpg", f"{ig} {n}")
        await put(client, CACHE, f"instagram/{ig}/media/0.jpg", f"{ig} 0 again")  # overwrite

    # Versions of one key in order; different keys at once.
    await asyncio.gather(
        *(tenant_files(t) for t in (TENANT_A, TENANT_A_SIBLING, TENANT_C)),
        *(cached_media(ig) for ig in ALL_IG),
        put(client, MEDIA, "shared/fonts/inter.woff2", "not personal"),
    )


async def snapshot(client: Any, bucket: str) -> set[Entry]:
    """Every version and delete marker of the bucket (listing only: no deletes between pages)."""
    entries: set[Entry] = set()
    paginator = client.get_paginator("list_object_versions")
    async for page in paginator.paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            entries.add((v["Key"], v["VersionId"], v["ETag"], v["IsLatest"]))
        for m in page.get("DeleteMarkers", []):
            entries.add((m["Key"], m["VersionId"], "marker", m["IsLatest"]))
    return entries


async def snapshots(client: Any) -> dict[str, set[Entry]]:
    return {MEDIA: await snapshot(client, MEDIA), CACHE: await snapshot(client, CACHE)}


def under(entries: set[Entry], *prefixes: str) -> set[Entry]:
    return {e for e in entries if e[0].startswith(prefixes)}


@pytest.fixture
async def s3(moto_server: MotoServer, s3_endpoint_url: str) -> AsyncIterator[Any]:
    """An aiobotocore client on a freshly reset and seeded moto."""
    moto_server.reset()
    session = get_session()
    async with session.create_client(
        "s3", endpoint_url=s3_endpoint_url, region_name="us-east-1"
    ) as client:
        await seed(client)
        yield client


@pytest.fixture
def purger(s3: Any) -> S3Purger:
    return S3Purger(s3, S3_MAP)


class RecordingClient:
    """The real client, recording the DeleteObjects batch sizes and truncated listings."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.delete_batches: list[int] = []
        self.truncated_pages = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def delete_objects(self, **kw: Any) -> Any:
        self.delete_batches.append(len(kw["Delete"]["Objects"]))
        return await self._client.delete_objects(**kw)

    async def list_object_versions(self, **kw: Any) -> Any:
        response = await self._client.list_object_versions(**kw)
        self.truncated_pages += bool(response.get("IsTruncated"))
        return response


def test_s3_purger_implements_the_protocol(purger: S3Purger) -> None:
    assert isinstance(purger, Purger)


async def test_the_seed_has_versions_and_delete_markers(s3: Any) -> None:
    before = await snapshots(s3)
    a = under(before[MEDIA], f"tenants/{TENANT_A}/")
    assert len(a) == PER_TENANT
    assert sum(e[2] == "marker" for e in a) == 2
    assert len(before[MEDIA]) == 3 * PER_TENANT + 1
    assert len(before[CACHE]) == len(ALL_IG) * PER_IG
    assert {e[1] for e in before[CACHE]} == {"null"}  # versioning off: one "null" version


async def test_account_deletion_removes_all_object_versions_and_markers_of_the_tenant(
    s3: Any, purger: S3Purger
) -> None:
    before = await snapshots(s3)
    doomed = {
        MEDIA: under(before[MEDIA], f"tenants/{TENANT_A}/"),
        CACHE: under(before[CACHE], *(f"instagram/{ig}/" for ig in IG_A)),
    }
    assert len(doomed[MEDIA]) == PER_TENANT and len(doomed[CACHE]) == 2 * PER_IG

    result = await purger.purge(ACCOUNT_A)

    assert result.deleted == {MEDIA: PER_TENANT, CACHE: 2 * PER_IG}
    after = await snapshots(s3)
    # Nothing of A is left; every other version keeps its id, ETag and IsLatest.
    assert after[MEDIA] == before[MEDIA] - doomed[MEDIA]
    assert after[CACHE] == before[CACHE] - doomed[CACHE]
    assert len(under(after[MEDIA], f"tenants/{TENANT_A_SIBLING}/")) == PER_TENANT
    assert len(under(after[CACHE], f"instagram/{IG_SIBLING}/")) == PER_IG
    assert await purger.verify(ACCOUNT_A) == {MEDIA: 0, CACHE: 0}


async def test_meta_data_deletion_removes_only_the_cache_of_the_given_accounts(
    s3: Any, purger: S3Purger
) -> None:
    before = await snapshots(s3)
    meta = subject(RequestKind.meta_data, tenants=[TENANT_A], igs=[IG_A[0]])

    result = await purger.purge(meta)

    assert result.deleted == {CACHE: PER_IG}
    after = await snapshots(s3)
    assert after[MEDIA] == before[MEDIA]
    assert after[CACHE] == before[CACHE] - under(before[CACHE], f"instagram/{IG_A[0]}/")
    assert len(under(after[CACHE], f"instagram/{IG_SIBLING}/")) == PER_IG
    assert len(under(after[CACHE], f"instagram/{IG_A[1]}/")) == PER_IG
    assert await purger.verify(meta) == {CACHE: 0}


async def test_the_cache_of_an_instagram_account_another_connection_has_is_kept_and_reported(
    s3: Any, purger: S3Purger
) -> None:
    """The cache is keyed by the Instagram account: another tenant's connection still has
    IG_A[0], so A's account deletion keeps it, says so, and verifies without it."""
    account = Subject(
        uuid.uuid4(),
        RequestKind.account,
        {},
        Resolution(tenant_ids=[TENANT_A], ig_user_ids=IG_A, shared_ig_user_ids=[IG_A[0]]),
    )
    before = await snapshots(s3)
    assert await purger.preview(account) == PurgeResult(
        deleted={MEDIA: PER_TENANT, CACHE: PER_IG},
        retained={CACHE: Retained(PER_IG, S3_MAP.buckets[CACHE].shared)},
    )

    result = await purger.purge(account)

    assert result.deleted == {MEDIA: PER_TENANT, CACHE: PER_IG}
    assert result.retained == {CACHE: Retained(PER_IG, S3_MAP.buckets[CACHE].shared)}
    assert "another SoundOps connection" in result.retained[CACHE].reason
    after = await snapshots(s3)
    assert under(after[CACHE], f"instagram/{IG_A[0]}/") == under(
        before[CACHE], f"instagram/{IG_A[0]}/"
    )
    assert under(after[CACHE], f"instagram/{IG_A[1]}/") == set()
    assert await purger.verify(account) == {MEDIA: 0, CACHE: 0}


@pytest.mark.slow
async def test_a_prefix_of_thousands_of_versions_is_removed_in_batches_of_at_most_1000(
    s3: Any,
) -> None:
    keys = [f"tenants/{TENANT_A}/uploads/bulk/{n:05d}.bin" for n in range(1200)]
    gate = asyncio.Semaphore(32)

    async def two_versions(key: str) -> None:
        async with gate:
            await put(s3, MEDIA, key, "v1")
            await put(s3, MEDIA, key, "v2")

    await asyncio.gather(*(two_versions(key) for key in keys))
    before = await snapshots(s3)
    expected = PER_TENANT + 2 * len(keys)
    recording = RecordingClient(s3)
    purger = S3Purger(recording, S3_MAP)

    assert (await purger.preview(ACCOUNT_A)).deleted == {MEDIA: expected, CACHE: 2 * PER_IG}
    assert recording.truncated_pages >= 2  # 2,412 versions: three listing pages of 1,000
    result = await purger.purge(ACCOUNT_A)

    assert result.deleted == {MEDIA: expected, CACHE: 2 * PER_IG}
    batches = recording.delete_batches
    assert max(batches) <= 1000
    assert sum(batches) == expected + 2 * PER_IG
    assert sorted(batches) == [PER_IG, PER_IG, 412, 1000, 1000]  # cache x2, media in 3
    assert await purger.verify(ACCOUNT_A) == {MEDIA: 0, CACHE: 0}
    after = await snapshots(s3)
    assert after[MEDIA] == before[MEDIA] - under(before[MEDIA], f"tenants/{TENANT_A}/")


async def test_preview_counts_what_purge_deletes_and_deletes_nothing(
    s3: Any, purger: S3Purger
) -> None:
    before = await snapshots(s3)

    preview = await purger.preview(ACCOUNT_A)

    assert preview.deleted == {MEDIA: PER_TENANT, CACHE: 2 * PER_IG}
    assert await snapshots(s3) == before
    assert (await purger.purge(ACCOUNT_A)).deleted == preview.deleted


async def test_purge_again_is_a_no_op_and_verify_finds_nothing(s3: Any, purger: S3Purger) -> None:
    assert await purger.verify(ACCOUNT_A) == {MEDIA: PER_TENANT, CACHE: 2 * PER_IG}
    await purger.purge(ACCOUNT_A)
    after_first = await snapshots(s3)

    again = await purger.purge(ACCOUNT_A)

    assert again.deleted == {MEDIA: 0, CACHE: 0}
    assert await snapshots(s3) == after_first
    assert await purger.verify(ACCOUNT_A) == {MEDIA: 0, CACHE: 0}


async def test_s3_down_is_retriable_and_the_purge_completes_after_restart(
    s3: Any, moto_server: MotoServer, s3_endpoint_url: str
) -> None:
    config = AioConfig(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
    async with get_session().create_client(
        "s3", endpoint_url=s3_endpoint_url, region_name="us-east-1", config=config
    ) as client:
        purger = S3Purger(client, S3_MAP)
        expected = (await purger.preview(ACCOUNT_A)).deleted
        moto_server.stop()
        try:
            with pytest.raises(PurgeRetriable, match=r"^S3 unreachable: \w+") as info:
                await purger.purge(ACCOUNT_A)
            message = str(info.value)
            assert TENANT_A not in message and IG_A[0] not in message
            # botocore's message quotes the request URL (with the prefix): not chained.
            assert info.value.__suppress_context__ and info.value.__cause__ is None
            with pytest.raises(PurgeRetriable):
                await purger.verify(ACCOUNT_A)
            with pytest.raises(PurgeRetriable):
                await purger.ping()
        finally:
            moto_server.start()
        await purger.ping()
        # moto keeps its state in memory only: a restarted server has lost the seed.
        if not await purger.bucket_names():
            await seed(client)

        result = await purger.purge(ACCOUNT_A)

        assert result.deleted == expected
        assert await purger.verify(ACCOUNT_A) == {MEDIA: 0, CACHE: 0}


async def test_an_empty_resolution_deletes_nothing(s3: Any, purger: S3Purger) -> None:
    before = await snapshots(s3)
    nobody = subject(RequestKind.account)

    assert (await purger.preview(nobody)).deleted == {MEDIA: 0, CACHE: 0}
    assert (await purger.purge(nobody)).deleted == {MEDIA: 0, CACHE: 0}
    assert await purger.verify(nobody) == {MEDIA: 0, CACHE: 0}
    assert (await purger.purge(subject(RequestKind.meta_data))).deleted == {CACHE: 0}
    assert await snapshots(s3) == before


async def test_a_missing_bucket_fails_naming_the_bucket(s3: Any) -> None:
    buckets = {
        **S3_MAP.buckets,
        "soundops-gone": Bucket(kinds={RequestKind.account: ["tenants/{tenant_id}/"]}),
    }
    purger = S3Purger(s3, S3Map(buckets=buckets))

    for call in (purger.preview, purger.purge, purger.verify):
        with pytest.raises(PurgeFailed, match=r"^bucket soundops-gone does not exist$"):
            await call(ACCOUNT_A)


@pytest.mark.parametrize(
    ("template", "tenant_id"),
    [
        ("tenants/{tenant_id}", TENANT_A),  # no trailing "/": would reach tenants/{A}extra/
        ("tenants/{tenant_id}/", ""),  # an empty id: tenants// (or the bucket, for "{tenant_id}/")
        ("tenants/{tenant_id}/", f"{TENANT_A}/uploads"),  # an id with "/"
    ],
)
async def test_unsafe_prefixes_stop_the_purge_before_anything_is_deleted(
    s3: Any, template: str, tenant_id: str
) -> None:
    # model_construct skips the data map's own check of templates, as a corrupt map would.
    bucket = Bucket.model_construct(versioned=True, kinds={RequestKind.account: [template]})
    purger = S3Purger(s3, S3Map.model_construct(buckets={MEDIA: bucket}))
    before = await snapshots(s3)

    with pytest.raises(PurgeFailed) as info:
        await purger.purge(subject(RequestKind.account, tenants=[tenant_id]))

    assert TENANT_A not in str(info.value)
    assert await snapshots(s3) == before


async def test_keys_that_s3_refuses_to_delete_fail_without_naming_them(
    s3: Any, purger: S3Purger
) -> None:
    # A bucket policy (moto enforces DeleteObjects against it) protects A's site files.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
                "Resource": f"arn:aws:s3:::{MEDIA}/tenants/{TENANT_A}/site/*",
            }
        ],
    }
    await s3.put_bucket_policy(Bucket=MEDIA, Policy=json.dumps(policy))

    with pytest.raises(PurgeFailed, match=r"in bucket soundops-media: AccessDenied x\d+$") as info:
        await purger.purge(ACCOUNT_A)

    assert TENANT_A not in str(info.value) and "site" not in str(info.value)
    remaining = await purger.verify(ACCOUNT_A)
    assert remaining[MEDIA] == 5  # index.html: 3 versions + 1 marker; style.css: 1
    assert remaining[CACHE] == 0


class ThrottlingS3:
    """A stand-in for S3 whose DeleteObjects answers per-key ``SlowDown`` errors, which
    moto never produces: the first key of each of the first ``slowdowns`` calls fails."""

    def __init__(self, keys: list[str], slowdowns: int) -> None:
        self.objects = {(key, "null") for key in keys}
        self.slowdowns = slowdowns
        self.delete_calls = 0

    async def list_object_versions(self, **kw: Any) -> dict[str, Any]:
        found = sorted(e for e in self.objects if e[0].startswith(kw["Prefix"]))
        assert len(found) <= kw["MaxKeys"]
        return {"Versions": [{"Key": k, "VersionId": v} for k, v in found], "IsTruncated": False}

    async def delete_objects(self, **kw: Any) -> dict[str, Any]:
        self.delete_calls += 1
        errors: list[dict[str, str]] = []
        for n, obj in enumerate(kw["Delete"]["Objects"]):
            if n == 0 and self.slowdowns > 0:
                errors.append({**obj, "Code": "SlowDown", "Message": "Reduce your request rate."})
            else:
                self.objects.discard((obj["Key"], obj["VersionId"]))
        self.slowdowns -= bool(errors)
        return {"Errors": errors}


CACHE_ONLY = S3Map(buckets={CACHE: S3_MAP.buckets[CACHE]})
CACHE_KEYS = [f"instagram/{IG_A[0]}/media/{n}.jpg" for n in range(5)]


async def test_throttled_keys_are_retried_with_backoff() -> None:
    fake = ThrottlingS3(CACHE_KEYS, slowdowns=2)
    purger = S3Purger(fake, CACHE_ONLY, key_retries=3, retry_base_seconds=0.01)

    result = await purger.purge(ACCOUNT_A)

    assert result.deleted == {CACHE: len(CACHE_KEYS)}
    assert fake.delete_calls == 3 and not fake.objects


async def test_keys_throttled_beyond_the_retries_are_retriable() -> None:
    fake = ThrottlingS3(CACHE_KEYS, slowdowns=100)
    purger = S3Purger(fake, CACHE_ONLY, key_retries=2, retry_base_seconds=0.01)

    with pytest.raises(PurgeRetriable, match=r"^S3 unreachable: SlowDown x1 ") as info:
        await purger.purge(ACCOUNT_A)

    assert IG_A[0] not in str(info.value)
    assert fake.delete_calls == 3
    assert len(fake.objects) == 1
