"""Turn stored requests into the API's shapes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from app.models import (
    DeletionRequest,
    LegalHold,
    RequestKind,
    RequestSource,
    RequestStatus,
    TaskStatus,
)
from app.purgers.base import PurgerName, third_party_counts
from app.schemas import (
    BackupHorizonOut,
    DeletionRequestOut,
    HoldOut,
    PreviewOut,
    PreviewTask,
    RetainedOut,
    ReviewOut,
    StatusPageOut,
    StatusPageStore,
    TaskOut,
)
from app.services.claims import completion_sentence, store_claim
from app.services.evidence.receipts import BackupHorizon
from app.services.preview import PreviewItem
from app.subjects import Review


def _retained(raw: dict[str, object]) -> dict[str, RetainedOut]:
    return {name: RetainedOut.model_validate(value) for name, value in raw.items()}


class TaskShown(Protocol):
    """What a task shows: a stored one, or one just filed."""

    @property
    def purger(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def deleted(self) -> dict[str, int]: ...
    @property
    def retained(self) -> dict[str, Any]: ...
    @property
    def error(self) -> str | None: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def next_attempt_at(self) -> datetime | None: ...


class RequestShown(Protocol):
    """What a request shows: a stored one (``DeletionRequest``), or one just filed
    (``FiledRequest``, from its rows)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def requested_by(self) -> str: ...
    @property
    def confirmation_code(self) -> str: ...
    @property
    def status_reason(self) -> str | None: ...
    @property
    def review_reason(self) -> str | None: ...
    @property
    def review(self) -> dict[str, Any] | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def due_at(self) -> datetime: ...
    @property
    def completed_at(self) -> datetime | None: ...
    @property
    def tasks(self) -> Sequence[TaskShown]: ...


def _review(request: RequestShown) -> ReviewOut:
    shown = Review.model_validate(request.review or {})
    return ReviewOut(reason=request.review_reason, **shown.model_dump())


def request_out(
    request: RequestShown, status_url: str, *, admin: bool = False
) -> DeletionRequestOut:
    """``admin``: the caller may see what an e-mail named (``review``, while in review)."""
    in_review = request.status == RequestStatus.needs_review
    return DeletionRequestOut(
        id=request.id,
        kind=RequestKind(request.kind),
        status=RequestStatus(request.status),
        source=RequestSource(request.source),
        requested_by=request.requested_by,
        confirmation_code=request.confirmation_code,
        status_url=status_url,
        status_reason=request.status_reason,
        review_reason=request.review_reason,
        review=_review(request) if admin and in_review else None,
        created_at=request.created_at,
        due_at=request.due_at,
        completed_at=request.completed_at,
        tasks=[
            TaskOut(
                purger=PurgerName(task.purger),
                status=TaskStatus(task.status),
                attempts=task.attempts,
                deleted=dict(task.deleted),
                as_third_party=third_party_counts(task.deleted),
                retained=_retained(task.retained),
                error=task.error,
                started_at=task.started_at,
                finished_at=task.finished_at,
                next_attempt_at=(
                    task.next_attempt_at if task.status == TaskStatus.retrying else None
                ),
            )
            for task in request.tasks
        ],
    )


def status_page(
    request: DeletionRequest, backups: BackupHorizon, *, team_alerted: bool = False
) -> StatusPageOut:
    claims = [store_claim(task) for task in request.tasks]
    status = RequestStatus(request.status)
    return StatusPageOut(
        kind=RequestKind(request.kind),
        status=status,
        received_at=request.created_at,
        due_at=request.due_at,
        completed_at=request.completed_at,
        summary=completion_sentence(claims) if status is RequestStatus.completed else None,
        stores=[
            StatusPageStore(
                store=PurgerName(task.purger),
                status=TaskStatus(task.status),
                verified=claim.verified,
                outcome=claim.text,
                deleted=dict(task.deleted),
                as_third_party=third_party_counts(task.deleted),
                retained=_retained(task.retained),
            )
            for task, claim in zip(request.tasks, claims, strict=True)
        ],
        backups=BackupHorizonOut(
            retention_days=backups.retention_days,
            expire_by=backups.expire_by,
            statement=backups.statement,
        ),
        team_alerted=team_alerted,
    )


def hold_out(hold: LegalHold, *, held_requests: int | None = None) -> HoldOut:
    return HoldOut(
        id=hold.id,
        subject={name: str(value) for name, value in hold.subject.items()},
        reason=hold.reason,
        created_at=hold.created_at,
        created_by=hold.created_by,
        released_at=hold.released_at,
        released_by=hold.released_by,
        held_requests=held_requests,
    )


def preview_out(items: list[PreviewItem]) -> PreviewOut:
    return PreviewOut(
        tasks=[
            PreviewTask(
                purger=item.purger,
                would_delete=item.result.deleted,
                as_third_party=third_party_counts(item.result.deleted),
                would_retain={
                    name: RetainedOut(count=r.count, reason=r.reason)
                    for name, r in item.result.retained.items()
                },
                skipped=item.skipped,
            )
            for item in items
        ]
    )
