"""Who enforces each location's retention: the store's own rule, or the worker's sweep.

- ``ttl`` / ``lifecycle``: the rule is in place (``ok``) and the store is not listed in
  ``DELETION_RETENTION_SWEEP``: the store deletes expired data itself.
- ``sweep``: the worker deletes expired data itself, because the store is listed in
  ``DELETION_RETENTION_SWEEP``, or the server refuses the rule (``unsupported``: FerretDB
  and TTL indexes), or the rule is ``missing`` / ``wrong`` and could not be put right.
- ``none``: nothing enforces it right now: the store is not configured, or does not answer
  (``unreachable`` / ``error``) — an operator must look.
"""

from __future__ import annotations

from dataclasses import replace

from app.retention_status import RetentionMode, RetentionStatus, RetentionStore
from app.services.evidence.retention.report import RetentionItem

NATIVE = {RetentionStore.mongodb: RetentionMode.ttl, RetentionStore.s3: RetentionMode.lifecycle}
RULE = {RetentionStore.mongodb: "TTL index", RetentionStore.s3: "lifecycle rule"}


def mode_of(item: RetentionItem, sweep: frozenset[RetentionStore]) -> tuple[RetentionMode, str]:
    """The mode of one checked location, and why."""
    rule = RULE[item.store]
    if item.status is RetentionStatus.not_configured:
        return RetentionMode.none, "store not configured"
    if item.store in sweep:
        return RetentionMode.sweep, f"DELETION_RETENTION_SWEEP names {item.store.value}"
    if item.status is RetentionStatus.ok:
        return NATIVE[item.store], f"the {rule} is in place: the store expires data itself"
    if item.status is RetentionStatus.unsupported:
        return RetentionMode.sweep, f"the server refuses the {rule}"
    if item.status in (RetentionStatus.missing, RetentionStatus.wrong):
        return RetentionMode.sweep, f"the {rule} is {item.status.value}"
    return RetentionMode.none, f"the store did not answer ({item.status.value}): nothing enforced"


def with_modes(items: list[RetentionItem], sweep: frozenset[RetentionStore]) -> list[RetentionItem]:
    return [
        replace(item, mode=mode, mode_reason=reason)
        for item in items
        for mode, reason in [mode_of(item, sweep)]
    ]
