"""Requests by e-mail: filed unverified, then confirmed from a one-time link or reviewed.

The ``From`` of an e-mail can be forged, so a request filed from one never runs on its
word alone:

- ``awaiting_confirmation``: a one-time link is mailed to the address on file; only a
  POST from the link's page moves the request to ``pending``. Unconfirmed after
  ``DELETION_EMAIL_CONFIRM_TTL`` it is ``cancelled`` ("confirmation link expired").
- ``needs_review``: an operator approves it (``pending``, optionally with a corrected
  subject) or rejects it (``cancelled``).

The one-time link is in ``links``, the review in ``review``, the mail in ``replies``.

Each message is filed once by its ``Message-ID`` (a keyed hash in ``email_intake``, also
when it named a subject that already had an open request). Nothing of the message itself
is kept.

The functions take a session with no pending work of the caller's and commit it (or roll
it back): a state change is durable before any mail about it goes out. The session must
come from a sessionmaker with ``expire_on_commit=False`` (``app.db.create_sessionmaker``).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import repository
from app.datamap import Selection
from app.errors import Conflict
from app.models import (
    VERIFIED_OPEN_STATUSES,
    DeletionRequest,
    RequestKind,
    RequestSource,
    RequestStatus,
    utcnow,
)
from app.pii import keyed_hash
from app.services.intake.command import EmailFiling, NewDeletion, insert, subject_key
from app.settings import Settings
from app.subjects import Review, validated_subject

log = structlog.get_logger(__name__)

REQUESTED_BY = "email"
EMAIL_KINDS = frozenset({RequestKind.account, RequestKind.meta_data})
# Why a request filed from e-mail waits for an operator: codes, never personal data.
REVIEW_REASONS = frozenset(
    {
        "sender_not_on_file",
        "no_match",
        "several_tenants",
        "several_pages",
        "dmarc_fail",
        # Nobody on file, but the named username wrote here (a third-party data subject),
        # or MongoDB could not be asked whether it did.
        "third_party_only",
        "third_party_unchecked",
    }
)
FiledStatus = Literal["awaiting_confirmation", "needs_review"]


@dataclass(frozen=True)
class FiledEmailRequest:
    request: DeletionRequest
    created: bool
    # The raw one-time token, only for a request just created awaiting confirmation:
    # mail it (``confirmation_link``) and forget it; the service keeps only its hash.
    token: str | None = None


def message_id_hash(settings: Settings, message_id: str) -> str:
    """The keyed hash a Message-ID is known by (angle brackets and spaces do not count)."""
    value = message_id.strip().removeprefix("<").removesuffix(">").strip()
    if not value:
        raise ValueError("a Message-ID is required")
    return keyed_hash(settings.effective_hash_key, f"message-id={value}")


def confirm_token_hash(settings: Settings, token: str) -> str:
    return keyed_hash(settings.effective_hash_key, f"email-confirm-token={token}")


async def file_email_request(
    session: AsyncSession,
    *,
    kind: RequestKind | str,
    subject: Mapping[str, Any],
    status: FiledStatus,
    review_reason: str | None,
    message_id: str,
    recipients: list[str],
    settings: Settings,
    pinned: Selection | None = None,
    review: Review | None = None,
    notify_email: str | None = None,
) -> FiledEmailRequest:
    """File the request an e-mail asked for, once per Message-ID.

    - The same Message-ID again: the request it filed (or found), ``created=False``.
    - An open request of the same kind for the same subject exists that this one may join
      (a verified one, ``pending``/``running``, by REST, Meta or a confirmed e-mail; or an
      unverified one in the same ``status``): that request, ``created=False``; the message
      is recorded against it, so that it is never filed later either. An unverified
      request in the other status is not joined: a stranger's message in review never
      swallows the owner's, and rejecting one never cancels the other.
    - Otherwise a new request in ``status``, due 30 days from now (receipt); with a fresh
      one-time ``token`` when it awaits confirmation.

    ``recipients``: the address(es) on file the link goes to (required when awaiting
    confirmation). ``review_reason``: one of ``REVIEW_REASONS`` (required for review).
    ``pinned``: what the link's page shows and the confirmation carries (the tenant the
    sender is the owner on file of, and its matching accounts). ``review``: what the
    message named and the candidates, shown to the operator who reviews it.
    Raises ``Unprocessable`` for a subject a REST create would refuse.
    """
    kind = RequestKind(kind)
    filed_status = RequestStatus(status)
    if kind not in EMAIL_KINDS:
        raise ValueError(f"{kind.value} requests are not filed from e-mail")
    if filed_status is RequestStatus.awaiting_confirmation:
        if not recipients:
            raise ValueError("a request awaiting confirmation needs an address on file")
        if review_reason is not None:
            raise ValueError("a request awaiting confirmation has no review reason")
    elif filed_status is RequestStatus.needs_review:
        if review_reason not in REVIEW_REASONS:
            raise ValueError(f"review_reason must be one of {sorted(REVIEW_REASONS)}")
    else:
        raise ValueError("an e-mail files awaiting_confirmation or needs_review requests")
    key = settings.effective_hash_key
    identities = validated_subject(kind, subject)
    subject_hash = subject_key(key, kind, identities)
    mid = message_id_hash(settings, message_id)

    for _ in range(3):  # each round that loses a race finds the winner in the next one
        found = await _already_filed(session, mid, kind, subject_hash, filed_status)
        if found is not None:
            return found
        awaiting = filed_status is RequestStatus.awaiting_confirmation
        token = secrets.token_urlsafe(32) if awaiting else None
        command = NewDeletion(
            kind=kind,
            identities=identities,
            source=RequestSource.email,
            requested_by=REQUESTED_BY,
            status=filed_status,
            notify_email=notify_email,
            pinned=pinned,
            email=EmailFiling(
                message_id_hash=mid,
                confirm_token_hash=confirm_token_hash(settings, token) if token else None,
                confirm_ttl=settings.email_confirm_ttl if awaiting else None,
                recipients=tuple(recipients),
                review_reason=review_reason,
                review=review,
            ),
        )
        request = await insert(session, command, hash_key=key, deadline_days=settings.deadline_days)
        if request is None:
            await session.rollback()  # same message or same subject, filed concurrently
            continue
        repository.add_email_intake(
            session, mid, request_id=request.id, outcome="filed", now=request.created_at
        )
        try:
            await session.flush()
        except IntegrityError:
            await session.rollback()  # the same message, recorded concurrently
            continue
        await session.commit()
        log.info(
            "email_request_filed",
            request_id=str(request.id),
            kind=kind.value,
            status=filed_status.value,
        )
        return FiledEmailRequest(request, created=True, token=token)
    raise Conflict("The message could not be filed (concurrent filings); try again.")


async def _already_filed(
    session: AsyncSession, mid: str, kind: RequestKind, subject_hash: str, status: RequestStatus
) -> FiledEmailRequest | None:
    intake = await repository.get_email_intake(session, mid)
    if intake is not None:
        if intake.request_id is None:
            await session.commit()
            raise Conflict(f"This message was handled already ({intake.outcome}).")
        request = await repository.get_request_fresh(session, intake.request_id)
        await session.commit()
        assert request is not None
        return FiledEmailRequest(request, created=False)
    existing = await repository.get_open_request_for_subject(
        session, kind, subject_hash, VERIFIED_OPEN_STATUSES | {status}
    )
    if existing is None:
        return None
    repository.add_email_intake(
        session, mid, request_id=existing.id, outcome="duplicate", now=utcnow()
    )
    repository.add_event(session, existing.id, "email_duplicate", actor=REQUESTED_BY)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()  # the same message, recorded concurrently: look again
        return None
    return FiledEmailRequest(existing, created=False)


async def record_email(
    session: AsyncSession, *, message_id: str, outcome: str, settings: Settings
) -> bool:
    """Record a message that files nothing (``outcome``: a short code, e.g. ``ignored``),
    so that it is handled once. False when the Message-ID was handled already."""
    mid = message_id_hash(settings, message_id)
    if await repository.get_email_intake(session, mid) is not None:
        await session.commit()
        return False
    repository.add_email_intake(session, mid, request_id=None, outcome=outcome, now=utcnow())
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        return False
    return True


async def close_as_duplicate(
    session: AsyncSession,
    request_id: uuid.UUID,
    from_status: RequestStatus,
    kind: RequestKind,
    key: str,
    *,
    actor: str,
    values: repository.RequestChanges | None = None,
) -> DeletionRequest | None:
    """An unverified request was just confirmed or approved, but a verified request of the
    same kind for the same subject is open: that one carries the deletion. This one is
    ``cancelled`` with a reason naming it (events on both); returns the open one. None,
    with nothing changed, when no such request is open any more or this one has left
    ``from_status`` (the caller looks again)."""
    other = await repository.get_open_request_for_subject(session, kind, key)
    if other is None or other.id == request_id:
        await session.rollback()
        return None
    now = utcnow()
    if not await repository.transition_request(
        session,
        request_id,
        from_statuses=frozenset({from_status}),
        to_status=RequestStatus.cancelled,
        # A worker then minimises what the request keeps.
        values={
            "status_reason": f"duplicate of request {other.id}",
            "run_after": now,
            **(values or {}),
        },
    ):
        await session.rollback()
        return None
    repository.add_event(
        session, request_id, "closed_as_duplicate", actor=actor, detail={"of": str(other.id)}
    )
    repository.add_event(
        session, other.id, "email_duplicate", actor=actor, detail={"request": str(request_id)}
    )
    other_id = other.id
    await session.commit()
    log.info("email_request_duplicate", request_id=str(request_id), of=str(other_id))
    return await repository.get_request_fresh(session, other_id)
