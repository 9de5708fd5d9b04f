"""An operator's review of a request filed from e-mail: approve (pinned to one tenant,
optionally with a corrected subject) or reject; and the expiry of reviews no one decided.
The functions take a session and commit it (or roll it back), as in ``filing``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import repository
from app.datamap import Selection
from app.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable
from app.models import (
    REJECTED_REASON,
    REVIEW_EXPIRED_REASON,
    DeletionRequest,
    RequestKind,
    RequestStatus,
    utcnow,
)
from app.services.identities import hashes as identity_hashes
from app.services.intake.command import subject_key
from app.services.intake.email.filing import close_as_duplicate
from app.services.target import TargetDirectory, TargetUnavailable
from app.settings import Settings
from app.subjects import Review, ReviewCandidate, validated_subject

log = structlog.get_logger(__name__)

# Reviews whose approval needs the operator's choice of one tenant (a subject).
NEEDS_CHOICE = frozenset({"several_tenants", "several_pages", "no_match"})
# Reviews of a username that nobody on file has (a fan who wrote to artists): approved as
# they are, pinned to no connection, so that the request reaches only what they wrote.
WRITER_ONLY = frozenset({"third_party_only", "third_party_unchecked"})
# A request in review that no operator decided in this time is cancelled (and minimised):
# it must not keep what the message named for ever.
REVIEW_TTL = timedelta(days=30)


def candidate_subject(kind: RequestKind, candidate: ReviewCandidate) -> dict[str, str]:
    """The ``subject`` that approves a request in review choosing one of its candidates:
    exactly that tenant, never more."""
    if kind is RequestKind.instagram_disconnect:
        raise Unprocessable("A disconnect names its one connection already; approve it as named.")
    # account: that tenant by its id; meta_data: the named identity within that tenant.
    return {"tenant_id": str(candidate.tenant_id)}


async def approve(
    session: AsyncSession,
    request_id: uuid.UUID,
    *,
    operator: str,
    subject: Mapping[str, Any] | None = None,
    settings: Settings,
    target: TargetDirectory | None = None,
) -> DeletionRequest:
    """needs_review -> pending, pinned to the one tenant (and its accounts) the operator
    chose or saw; optionally with a corrected subject (validated as a REST create of the
    request's kind would be; for ``meta_data`` it may add ``tenant_id``, choosing among
    the tenants the identity matches).

    A request in review because its name matched several tenants or Pages, or nothing,
    needs ``subject``; any approval must come to exactly one tenant, else 409 saying how
    many candidates there are. The one exception: a ``third_party_*`` review (a username
    nobody on file has) approved without ``subject`` is pinned to no tenant and no
    connection, and reaches only what the named person wrote. When a verified request for
    the (corrected) subject is open already, this one is closed as its duplicate instead
    (``cancelled``, the reason names the open one). 404 unknown; 409 another status; 422
    an invalid subject; 503 the SoundOps database is needed to check the choice and cannot
    be reached."""
    request = await repository.get_request_fresh(session, request_id)
    if request is None:
        await session.rollback()
        raise NotFound("No deletion request with this id.")
    current, kind = request.status, RequestKind(request.kind)
    named = {k: str(v) for k, v in request.subject.items()}
    shown = Review.model_validate(request.review) if request.review else None
    reason, new_key = request.review_reason, request.subject_key
    await session.rollback()  # no transaction held while the SoundOps database is asked
    if current != RequestStatus.needs_review:
        raise Conflict(f"A {current} request cannot be approved; only needs_review ones can.")
    identities: dict[str, str] | None = None
    if subject is not None:
        identities, candidates = await _chosen(kind, named, subject, target)
    elif reason in NEEDS_CHOICE:
        count = len(shown.candidates) if shown is not None else 0
        raise Conflict(
            f"This request's name matched {count} candidates ({reason}); approve it with "
            '{"subject": {...}} naming exactly one tenant.',
            extra={"candidates": count},
        )
    elif reason in WRITER_ONLY:
        candidates = []  # nobody on file: no connection, only what the person wrote
    elif shown is not None:
        candidates = [
            (str(c.tenant_id), str(c.instagram_account_id) if c.instagram_account_id else None)
            for c in shown.candidates
        ]
    else:  # filed without what the review shows: the named subject as it resolves now
        _, candidates = await _chosen(kind, named, {}, target)
    tenants = {tenant for tenant, _ in candidates}
    if len(tenants) != 1 and not (identities is None and reason in WRITER_ONLY):
        hint = " (a meta_data subject may add tenant_id)" if kind is RequestKind.meta_data else ""
        raise Conflict(
            f"The subject resolves to {len(tenants)} tenants ({len(candidates)} candidates); "
            f"approve with a subject that resolves to exactly one tenant{hint}.",
            extra={"candidates": len(candidates)},
        )
    pinned = Selection(
        tenant_ids=sorted(tenants),
        account_ids=sorted({str(a) for _, a in candidates if a is not None}),
    )
    values: repository.RequestChanges = {"run_after": utcnow(), "pinned": pinned.model_dump()}
    if identities is not None:
        new_key = subject_key(settings.effective_hash_key, kind, identities)
        values.update({"subject": identities, "subject_key": new_key})
    for _ in range(3):
        try:
            changed = await repository.transition_request(
                session,
                request_id,
                from_statuses=frozenset({RequestStatus.needs_review}),
                to_status=RequestStatus.pending,
                values=values,
            )
        except IntegrityError:  # a verified request for the subject is open
            await session.rollback()
            if await close_as_duplicate(
                session, request_id, RequestStatus.needs_review, kind, new_key, actor=operator
            ):
                closed = await repository.get_request_fresh(session, request_id)
                await session.commit()
                assert closed is not None
                return closed
            continue
        break
    else:
        raise Conflict("The request could not be approved (concurrent changes); try again.")
    if not changed:
        await session.rollback()
        raise Conflict("The request was decided meanwhile; only needs_review ones can be approved.")
    if identities is not None:
        await repository.replace_subject_hashes(
            session, request_id, identity_hashes(settings.effective_hash_key, identities)
        )
    repository.add_event(
        session,
        request_id,
        "approved",
        actor=operator,
        detail={
            "subject_replaced": identities is not None,
            "pinned_accounts": len(pinned.account_ids),
        },
    )
    await session.commit()
    log.info("email_request_approved", request_id=str(request_id))
    approved = await repository.get_request_fresh(session, request_id)
    await session.commit()
    assert approved is not None
    return approved


async def _chosen(
    kind: RequestKind,
    named: dict[str, str],
    subject: Mapping[str, Any],
    target: TargetDirectory | None,
) -> tuple[dict[str, str] | None, list[tuple[str, str | None]]]:
    """An operator's choice: the corrected identities (None: the named ones stay) and the
    (tenant, account) candidates it resolves to now, matched as the resolver matches."""
    given = dict(subject)
    within: str | None = None
    if kind is RequestKind.meta_data and "tenant_id" in given:
        raw = given.pop("tenant_id")
        try:
            within = str(uuid.UUID(str(raw)))
        except ValueError as exc:
            raise Unprocessable(
                "The subject's tenant_id is not a UUID.",
                extra={
                    "errors": [
                        {
                            "loc": ["body", "subject", "tenant_id"],
                            "msg": "Input should be a valid UUID",
                            "type": "uuid_parsing",
                        }
                    ]
                },
            ) from exc
    identities = validated_subject(kind, given) if given else None
    if target is None:
        raise ServiceUnavailable(
            "Approving needs the SoundOps database (DELETION_TARGET_POSTGRES_URL) to check "
            "what the subject resolves to."
        )
    ((name, value),) = (identities or named).items()
    try:
        found = await target.tenants_by(name, [value])
    except TargetUnavailable as exc:
        raise ServiceUnavailable(
            "The SoundOps database is unavailable; approve again later.",
            headers={"Retry-After": "30"},
        ) from exc
    candidates = [
        (str(n.tenant_id), str(n.account_id) if n.account_id else None)
        for n in found
        if within is None or str(n.tenant_id) == within
    ]
    return identities, candidates


async def reject(
    session: AsyncSession, request_id: uuid.UUID, *, operator: str, reason: str | None = None
) -> DeletionRequest:
    """needs_review or awaiting_confirmation -> cancelled, with the reason. Nothing is
    deleted; a worker then minimises what the request keeps. 404 unknown, 409 otherwise."""
    request = await repository.get_request_fresh(session, request_id)
    if request is None:
        await session.rollback()
        raise NotFound("No deletion request with this id.")
    current = request.status
    changed = await repository.transition_request(
        session,
        request_id,
        from_statuses=frozenset({RequestStatus.needs_review, RequestStatus.awaiting_confirmation}),
        to_status=RequestStatus.cancelled,
        values={
            "status_reason": reason or REJECTED_REASON,
            "confirm_recipients": None,
            "run_after": utcnow(),
        },
    )
    if not changed:
        await session.rollback()
        raise Conflict(
            f"A {current} request cannot be rejected; "
            "only needs_review or awaiting_confirmation ones can."
        )
    repository.add_event(session, request_id, "rejected", actor=operator)
    await session.commit()
    log.info("email_request_rejected", request_id=str(request_id))
    rejected = await repository.get_request_fresh(session, request_id)
    await session.commit()
    assert rejected is not None
    return rejected


async def expire_reviews(session: AsyncSession, now: datetime, *, actor: str = "system") -> int:
    """Cancel requests in review filed more than REVIEW_TTL ago (reason recorded); how
    many. A worker then minimises them like any cancelled request."""
    expired = await repository.expire_reviews(session, now - REVIEW_TTL, now, REVIEW_EXPIRED_REASON)
    for request_id in expired:
        repository.add_event(session, request_id, "review_expired", actor=actor)
    await session.commit()
    if expired:
        log.info("email_reviews_expired", count=len(expired))
    return len(expired)
