"""What the service may say about each store of a request, in one place.

The status page, the completion e-mail and webhook, and the receipt all say it
with these words: "deleted and verified" only for a store whose purger ran and
verified; a skipped store is named with its reason, and "not part of this
deployment", "not configured" and "nothing to delete for this kind" are never
the same words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.models import DeletionTask, TaskStatus
from app.purgers.base import ABSENT_REASON, SkipKind

DELETED_AND_VERIFIED = "deleted and verified"
SKIP_TEXT = {
    SkipKind.absent: ABSENT_REASON,
    SkipKind.not_configured: "not configured: nothing was deleted there",
    SkipKind.not_applicable: "nothing to delete there for this kind of request",
    SkipKind.revoke_unconfirmed: (
        "revoke not confirmed by Meta before the deadline: the access tokens were "
        "destroyed anyway, Meta's side is not verified"
    ),
}
COMPLETED_EVERYWHERE = "the data has been deleted and the deletion verified"
COMPLETED_WHERE_RAN = (
    "the data has been deleted and the deletion verified in the stores marked as such; "
    "the stores marked otherwise were not touched, for the reason given"
)
COMPLETED_REVOKE_UNCONFIRMED = (
    "the data has been deleted and the deletion verified in the stores marked as such; "
    "Meta did not confirm the revoke before the deadline: the access tokens were destroyed "
    "anyway, and the revoke at Meta is not verified"
)


@dataclass(frozen=True)
class StoreClaim:
    store: str
    status: str
    verified: bool  # the purger ran and found nothing of the subject left
    skipped: SkipKind | None

    @property
    def text(self) -> str | None:
        """The words for a finished store (None while it is not finished)."""
        if self.verified:
            return DELETED_AND_VERIFIED
        if self.skipped is not None:
            return SKIP_TEXT[self.skipped]
        return None


def store_claim(task: DeletionTask) -> StoreClaim:
    skipped = SkipKind.of(task.error) if task.status == TaskStatus.skipped else None
    return StoreClaim(
        store=task.purger,
        status=task.status,
        verified=task.status == TaskStatus.succeeded,
        skipped=skipped,
    )


def completion_sentence(claims: Iterable[StoreClaim]) -> str:
    """What a completed request may say as a whole."""
    claims = list(claims)
    if any(claim.skipped is not None and claim.skipped.untouched for claim in claims):
        return COMPLETED_WHERE_RAN
    if any(claim.skipped is SkipKind.revoke_unconfirmed for claim in claims):
        return COMPLETED_REVOKE_UNCONFIRMED
    return COMPLETED_EVERYWHERE
