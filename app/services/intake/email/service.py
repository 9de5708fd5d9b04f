"""E-mail requests for the routers and the CLI: the link's page (what a confirmation
would delete, counted by the preview) and operators' review, each in a session of its own."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.datamap import Selection
from app.errors import ProblemError
from app.models import (
    DeletionRequest,
    RequestKind,
    utcnow,
)
from app.services.intake.email import links, review
from app.services.intake.email.links import ConfirmOutcome, LinkState
from app.services.preview import PreviewItem, PreviewService
from app.services.target import TargetDirectory
from app.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ConfirmationView:
    """What the link's page shows: no identifier, no personal data."""

    state: LinkState
    kind: RequestKind | None = None
    expires_at: datetime | None = None
    # The request's public status page code (for used links: "follow it there").
    confirmation_code: str | None = None
    # Per store, what a confirmation would delete and keep (valid links only).
    stores: list[PreviewItem] = field(default_factory=list)
    # False when the stores could not be counted just now (confirming still works).
    counted: bool = True


async def confirmation_view(
    session: AsyncSession, token: str, *, settings: Settings, preview: PreviewService
) -> ConfirmationView:
    """What the link's page shows. Changes nothing (mail scanners open links)."""
    request, _ = await links.by_token(session, token, settings)
    if request is None:
        await session.rollback()
        return ConfirmationView("unknown")
    state = links.link_state(request, utcnow())
    kind = RequestKind(request.kind)
    identities = {k: str(v) for k, v in request.subject.items()}
    pinned = Selection.model_validate(request.pinned) if request.pinned else None
    expires_at, code = request.confirm_expires_at, request.confirmation_code
    await session.rollback()  # read only; no transaction held while the stores are counted
    if state != "valid":
        return ConfirmationView(state, kind, expires_at, code)
    try:
        # What the confirmation carries: the pinned selection, never more.
        stores = await preview.preview(kind, identities, pinned)
    except ProblemError as exc:  # a store down, or not countable: say so, keep the button
        log.warning("confirmation_preview_failed", error_type=type(exc).__name__)
        return ConfirmationView(state, kind, expires_at, code, counted=False)
    return ConfirmationView(state, kind, expires_at, code, stores=stores)


class EmailRequests:
    """The link's page and operators' review, each in a session of its own."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        preview: PreviewService,
        target: TargetDirectory | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessionmaker
        self._preview = preview
        self._target = target

    async def view(self, token: str) -> ConfirmationView:
        async with self._sessions() as session:
            return await confirmation_view(
                session, token, settings=self._settings, preview=self._preview
            )

    async def confirm(self, token: str) -> ConfirmOutcome:
        async with self._sessions() as session:
            return await links.confirm(session, token, settings=self._settings)

    async def approve(
        self, request_id: uuid.UUID, *, operator: str, subject: Mapping[str, Any] | None = None
    ) -> DeletionRequest:
        async with self._sessions() as session:
            return await review.approve(
                session,
                request_id,
                operator=operator,
                subject=subject,
                settings=self._settings,
                target=self._target,
            )

    async def reject(
        self, request_id: uuid.UUID, *, operator: str, reason: str | None = None
    ) -> DeletionRequest:
        async with self._sessions() as session:
            return await review.reject(session, request_id, operator=operator, reason=reason)
