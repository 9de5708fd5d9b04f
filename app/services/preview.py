"""Preview: what a request would delete and retain, computed by the purgers, changing nothing."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from app.datamap import Resolution, Selection
from app.errors import ServiceUnavailable, Unprocessable
from app.models import RequestKind
from app.pii import Pii
from app.purgers.base import (
    NotConfigured,
    PurgeFailed,
    PurgeNotApplicable,
    PurgeResult,
    PurgeRetriable,
    PurgerName,
    PurgerSlot,
    Subject,
)
from app.services.plans import plan_for
from app.services.resolution import ResolverLike


@dataclass(frozen=True)
class PreviewItem:
    purger: PurgerName
    result: PurgeResult
    skipped: str | None = None


class PreviewService:
    def __init__(self, purgers: Mapping[PurgerName, PurgerSlot], resolver: ResolverLike) -> None:
        self._purgers = purgers
        self._resolver = resolver

    async def preview(
        self, kind: RequestKind, identities: dict[str, str], pinned: Selection | None = None
    ) -> list[PreviewItem]:
        configured = [
            step
            for step in plan_for(kind)
            if not isinstance(self._purgers.get(step.purger, NotConfigured("")), NotConfigured)
        ]
        try:
            # Nothing configured: nothing to look up, every store is skipped.
            resolution = (
                await self._resolver.resolve(kind, identities, pinned)
                if configured
                else Resolution()
            )
            subject = Subject(
                uuid.uuid4(), kind, {k: Pii(v) for k, v in identities.items()}, resolution
            )
            items = []
            for step in plan_for(kind):
                slot = self._purgers.get(step.purger)
                if slot is None or isinstance(slot, NotConfigured):
                    reason = slot.reason if slot else "no purger"
                    items.append(PreviewItem(step.purger, PurgeResult(), skipped=reason))
                    continue
                try:
                    items.append(PreviewItem(step.purger, await slot.preview(subject)))
                except PurgeNotApplicable as exc:
                    items.append(PreviewItem(step.purger, PurgeResult(), skipped=str(exc)))
            return items
        except PurgeRetriable as exc:
            raise ServiceUnavailable(
                f"A store is unreachable, so nothing can be previewed: {exc}",
                headers={"Retry-After": "30"},
            ) from exc
        except PurgeFailed as exc:
            raise Unprocessable(f"This request cannot be carried out as filed: {exc}") from exc
