"""S3: a lifecycle configuration per bucket (see the package's docstring)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict, cast

from botocore.exceptions import ClientError

from app.retention_status import RetentionStatus, RetentionStore
from app.services.evidence.retention.report import (
    RETENTION_DAYS,
    RetentionItem,
    store_failure,
)
from app.settings import Settings

VERSIONED = frozenset({"Enabled", "Suspended"})


class LifecycleFilter(TypedDict, total=False):
    Prefix: str
    Tag: object
    And: object
    ObjectSizeGreaterThan: int
    ObjectSizeLessThan: int


class LifecycleExpiration(TypedDict, total=False):
    Days: int
    Date: object  # a datetime
    ExpiredObjectDeleteMarker: bool


class NoncurrentExpiration(TypedDict, total=False):
    NoncurrentDays: int
    NewerNoncurrentVersions: int


class AbortMultipart(TypedDict, total=False):
    DaysAfterInitiation: int


class LifecycleRuleDocument(TypedDict, total=False):
    """One rule of an S3 bucket's lifecycle configuration, as S3 names its fields."""

    ID: str
    Prefix: str  # the legacy form of Filter
    Filter: LifecycleFilter
    Status: str
    Expiration: LifecycleExpiration
    NoncurrentVersionExpiration: NoncurrentExpiration
    AbortIncompleteMultipartUpload: AbortMultipart
    Transitions: list[object]
    NoncurrentVersionTransitions: list[object]


class LifecycleConfigurationDocument(TypedDict):
    Rules: list[LifecycleRuleDocument]


class S3Lifecycle(Protocol):
    """The calls of an (aiobotocore) S3 client that retention makes."""

    async def get_bucket_versioning(self, *, Bucket: str) -> Mapping[str, object]: ...

    async def get_bucket_lifecycle_configuration(
        self,
        *,
        Bucket: str,
    ) -> Mapping[str, object]: ...

    async def put_bucket_lifecycle_configuration(
        self,
        *,
        Bucket: str,
        LifecycleConfiguration: LifecycleConfigurationDocument,
    ) -> object: ...


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

    def rule(self) -> LifecycleRuleDocument:
        return {
            "ID": self.rule_id,
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "Expiration": {"Days": self.expiration_days},
            "NoncurrentVersionExpiration": {"NoncurrentDays": self.noncurrent_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": self.abort_multipart_days},
        }

    def delete_marker_rule(self) -> LifecycleRuleDocument:
        return {
            "ID": self.delete_marker_rule_id,
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "Expiration": {"ExpiredObjectDeleteMarker": True},
        }


CACHE_BUCKET = "soundops-ig-cache"
# The rule with the contract's 30 days; ``lifecycle_rules`` gives it for the configured window.
LIFECYCLE_RULES: tuple[LifecycleRule, ...] = (LifecycleRule(CACHE_BUCKET),)


def lifecycle_rules(settings: Settings) -> tuple[LifecycleRule, ...]:
    """The lifecycle rules for ``DELETION_INSTAGRAM_RETENTION`` (a whole number of days)."""
    return (LifecycleRule(CACHE_BUCKET, expiration_days=settings.instagram_retention.days),)


# --- S3 -----------------------------------------------------------------------------------


def _whole_bucket(rule: LifecycleRuleDocument) -> bool:
    if "Filter" in rule:
        filter_ = rule["Filter"] or {}
        return set(filter_) <= {"Prefix"} and not filter_.get("Prefix")
    return not rule.get("Prefix")


def _enabled(rule: LifecycleRuleDocument) -> bool:
    return rule.get("Status") == "Enabled"


def _expires_current(rule: LifecycleRuleDocument) -> bool:
    expiration = rule.get("Expiration") or {}
    return "Days" in expiration or "Date" in expiration


def _noncurrent_within(rule: LifecycleRuleDocument, days: int) -> bool:
    action = rule.get("NoncurrentVersionExpiration") or {}
    noncurrent = action.get("NoncurrentDays")
    return (
        noncurrent is not None and noncurrent <= days and not action.get("NewerNoncurrentVersions")
    )


def _describe(rule: LifecycleRuleDocument) -> str:
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
    expected: LifecycleRule, rules: Sequence[LifecycleRuleDocument], versioning: str | None
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


async def _lifecycle_rules(s3: S3Lifecycle, bucket: str) -> list[LifecycleRuleDocument]:
    try:
        response = await s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return []
        raise
    # S3's answer, in the shape its API documents.
    return list(cast(list[LifecycleRuleDocument], response.get("Rules", [])))


async def _versioning(s3: S3Lifecycle, bucket: str) -> str | None:
    """The bucket's versioning status, or None when it was never versioned.

    Raises ClientError ``NoSuchBucket`` for a bucket that does not exist."""
    response = await s3.get_bucket_versioning(Bucket=bucket)
    status = response.get("Status")
    return str(status) if status else None


def _no_bucket(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "NoSuchBucket")


async def check_bucket(s3: S3Lifecycle, expected: LifecycleRule) -> RetentionItem:
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
    expected: LifecycleRule, rules: Sequence[LifecycleRuleDocument], versioning: str | None
) -> tuple[list[LifecycleRuleDocument], list[str]]:
    """The bucket's rules with the expected retention in place, and what changed.

    Only enabled whole-bucket rules that expire current objects are changed (their
    expiry becomes ``expiration_days``; their other actions stay); every other rule is
    kept as it is."""
    merged = [copy.deepcopy(rule) for rule in rules]
    changes: list[str] = []
    target: LifecycleExpiration = {"Days": expected.expiration_days}
    for rule in merged:
        if _whole_bucket(rule) and _enabled(rule) and _expires_current(rule):
            if rule["Expiration"] != target:
                old = rule["Expiration"]
                was = f"{old['Days']} days" if "Days" in old else f"the date {old.get('Date')}"
                changes.append(
                    f"rule {rule.get('ID') or '(no id)'}: current objects now expire after "
                    f"{expected.expiration_days} days (was {was})"
                )
                rule["Expiration"] = target.copy()
            if versioning in VERSIONED and not _noncurrent_within(rule, expected.expiration_days):
                rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": expected.noncurrent_days}
                changes.append(
                    f"rule {rule.get('ID') or '(no id)'}: noncurrent versions expire after "
                    f"{expected.noncurrent_days} day(s)"
                )

    def put(new: LifecycleRuleDocument) -> None:
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


async def fix_bucket(s3: S3Lifecycle, expected: LifecycleRule) -> str:
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
        failure = store_failure(exc)
        assert failure is not None
        return f"PutBucketLifecycleConfiguration refused: {failure[1]}"
    kept = sum(1 for rule in rules if rule in merged)
    return "; ".join([*changes, f"{kept} other rule(s) kept unchanged"])


def bucket_item(expected: LifecycleRule, status: RetentionStatus, detail: str) -> RetentionItem:
    return RetentionItem(
        RetentionStore.s3, expected.bucket, expected.expected, status, detail=detail
    )
