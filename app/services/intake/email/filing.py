"""Requests by e-mail: filed unverified, then confirmed from a one-time link or reviewed.

The ``From`` of an e-mail can be forged, so a request filed from one never runs on its
word alone:

- ``awaiting_confirmation``: a one-time link is mailed to the address on file; only a
  POST from the link's page moves the request to ``pending``. Unconfirmed after
  ``DELETION_EMAIL_CONFIRM_TTL`` it is ``cancelled`` ("confirmation link expired").
- ``needs_review``: an operator approves it (``pending``, optionally with a corrected
  subject) or rejects it (``cancelled``).

The link's token is 256 random bits. Only its keyed hash (HMAC-SHA256 with
``DELETION_HASH_KEY``) is stored, found by that hash and compared in constant time; it
works once (a conditional UPDATE) and expires. The hash stays after use, so that a used
or expired link still answers "used" or "expired" rather than "unknown".

Each message is filed once by its ``Message-ID`` (a keyed hash in ``email_intake``, also
when it named a subject that already had an open request). Nothing of the message itself
is kept.

The functions take a session with no pending work of the caller's and commit it (or roll
it back): a state change is durable before any mail about it goes out. The session must
come from a sessionmaker with ``expire_on_commit=False`` (``app.db.create_sessionmaker``).
"""

from __future__ import annotations

import hmac
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import metrics, repository
from app.datamap import Selection
from app.errors import (
    Conflict,
    NotFound,
    ProblemError,
    ServiceUnavailable,
    Unprocessable,
    validation_errors,
)
from app.models import (
    VERIFIED_OPEN_STATUSES,
    DeletionRequest,
    RequestKind,
    RequestSource,
    RequestStatus,
    utcnow,
)
from app.pii import keyed_hash
from app.schemas import CreateDeletionRequest, Review
from app.services.identities import hashes as identity_hashes
from app.services.notify import DeliveryFailed, send_email
from app.services.plans import plan_for
from app.services.requests import new_confirmation_code, subject_key
from app.services.target import TargetDirectory, TargetUnavailable
from app.settings import Settings

if TYPE_CHECKING:  # preview imports the engine, which imports this module
    from app.services.preview import PreviewItem, PreviewService

log = structlog.get_logger(__name__)

REQUESTED_BY = "email"
EMAIL_KINDS = frozenset({RequestKind.account, RequestKind.meta_data})
# Why a request filed from e-mail waits for an operator: codes, never personal data.
REVIEW_REASONS = frozenset(
    {"sender_not_on_file", "no_match", "several_tenants", "several_pages", "dmarc_fail"}
)
# Reviews whose approval needs the operator's choice of one tenant (a subject).
NEEDS_CHOICE = frozenset({"several_tenants", "several_pages", "no_match"})
EXPIRED_REASON = "confirmation link expired"
REJECTED_REASON = "rejected by an operator"
# A request in review that no operator decided in this time is cancelled (and minimised):
# it must not keep what the message named for ever.
REVIEW_TTL = timedelta(days=30)
REVIEW_EXPIRED_REASON = "not reviewed within 30 days"
CONFIRM_PATH = "/deletion-confirm/"
CONFIRM_SUBJECT = "Confirm your SoundOps data deletion request"
# secrets.token_urlsafe(32) gives 43 characters; anything else is not one of ours.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
_CREATE: TypeAdapter[Any] = TypeAdapter(CreateDeletionRequest)

FiledStatus = Literal["awaiting_confirmation", "needs_review"]
LinkState = Literal["valid", "used", "expired", "cancelled", "unknown"]
ConfirmResult = Literal["confirmed", "used", "expired", "cancelled", "unknown"]


@dataclass(frozen=True)
class FiledEmailRequest:
    request: DeletionRequest
    created: bool
    # The raw one-time token, only for a request just created awaiting confirmation:
    # mail it (``confirmation_link``) and forget it; the service keeps only its hash.
    token: str | None = None


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


@dataclass(frozen=True)
class ConfirmOutcome:
    outcome: ConfirmResult
    request: DeletionRequest | None = None


# --- hashes, tokens, links ------------------------------------------------------------


def message_id_hash(settings: Settings, message_id: str) -> str:
    """The keyed hash a Message-ID is known by (angle brackets and spaces do not count)."""
    value = message_id.strip().removeprefix("<").removesuffix(">").strip()
    if not value:
        raise ValueError("a Message-ID is required")
    return keyed_hash(settings.effective_hash_key, f"message-id={value}")


def confirm_token_hash(settings: Settings, token: str) -> str:
    return keyed_hash(settings.effective_hash_key, f"email-confirm-token={token}")


def confirmation_link(settings: Settings, token: str) -> str:
    return f"{settings.public_base_url}{CONFIRM_PATH}{token}"


def validated_subject(kind: RequestKind, subject: Mapping[str, Any]) -> dict[str, str]:
    """The subject exactly as a REST create of this kind accepts and stores it."""
    try:
        body = _CREATE.validate_python(
            {"kind": kind, "subject": dict(subject), "source": RequestSource.email.value}
        )
    except ValidationError as exc:
        raise Unprocessable(
            f"The subject is not a valid {kind.value} subject; see errors.",
            extra={"errors": validation_errors(exc.errors())},
        ) from exc
    identities: dict[str, str] = body.subject.identities()
    return identities


# --- filing ---------------------------------------------------------------------------


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
        now = utcnow()
        awaiting = filed_status is RequestStatus.awaiting_confirmation
        token = secrets.token_urlsafe(32) if awaiting else None
        command = NewDeletion(
            kind=kind,
            identities=identities,
            source=RequestSource.email,
            requested_by=REQUESTED_BY,
            status=filed_status,
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
        request = await insert(
            session, command, hash_key=key, deadline_days=settings.deadline_days
        )
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


async def reissue_confirmation(
    session: AsyncSession, request_id: uuid.UUID, *, settings: Settings
) -> str | None:
    """A new one-time token for a request still awaiting confirmation (the old link stops
    working; the expiry stays). None when the request no longer awaits confirmation —
    e.g. to mail the link again after a crash between filing and mailing."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    if not await repository.set_confirm_token(
        session, request_id, confirm_token_hash(settings, token), now
    ):
        await session.rollback()
        return None
    repository.add_event(session, request_id, "confirmation_reissued", actor=REQUESTED_BY)
    await session.commit()
    return token


# --- the link -------------------------------------------------------------------------


async def _by_token(
    session: AsyncSession, token: str, settings: Settings
) -> tuple[DeletionRequest | None, str]:
    if not _TOKEN.match(token):
        return None, ""
    token_hash = confirm_token_hash(settings, token)
    request = await repository.get_request_by_confirm_token_hash(session, token_hash)
    if (
        request is None
        or request.confirm_token_hash is None
        or not hmac.compare_digest(request.confirm_token_hash, token_hash)
    ):
        return None, token_hash
    return request, token_hash


def _link_state(request: DeletionRequest, now: datetime) -> LinkState:
    if request.confirmed_at is not None:
        return "used"
    if request.status == RequestStatus.awaiting_confirmation:
        expires = request.confirm_expires_at
        return "valid" if expires is not None and expires > now else "expired"
    if request.status == RequestStatus.cancelled and request.status_reason == EXPIRED_REASON:
        return "expired"
    return "cancelled"  # rejected or cancelled by an operator before confirmation


async def confirmation_view(
    session: AsyncSession, token: str, *, settings: Settings, preview: PreviewService
) -> ConfirmationView:
    """What the link's page shows. Changes nothing (mail scanners open links)."""
    request, _ = await _by_token(session, token, settings)
    if request is None:
        await session.rollback()
        return ConfirmationView("unknown")
    state = _link_state(request, utcnow())
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


async def confirm(session: AsyncSession, token: str, *, settings: Settings) -> ConfirmOutcome:
    """The POST from the link's page: awaiting_confirmation -> pending, once.

    Of concurrent confirmations exactly one wins; the others answer ``used``. A used,
    expired, cancelled or unknown link changes nothing. When a verified request for the
    same subject is open already (filed by REST or Meta meanwhile), this one is closed as
    its duplicate and the outcome carries the open one. The caller wakes the worker.
    """
    request, token_hash = await _by_token(session, token, settings)
    if request is None:
        await session.rollback()
        return ConfirmOutcome("unknown")
    # The object expires with a rollback: keep what is needed.
    request_id, kind, key = request.id, RequestKind(request.kind), request.subject_key
    now = utcnow()
    for _ in range(3):
        try:
            confirmed = await repository.confirm_request(session, request_id, token_hash, now)
        except IntegrityError:  # a verified request for the subject is open
            await session.rollback()
            duplicate_of = await _close_as_duplicate(
                session,
                request_id,
                RequestStatus.awaiting_confirmation,
                kind,
                key,
                actor="email-link",
                values={"confirmed_at": now},
            )
            if duplicate_of is None:
                continue  # it closed in between, or this one changed: look again
            metrics.CONFIRMATIONS_CONFIRMED.inc()
            return ConfirmOutcome("confirmed", duplicate_of)
        break
    else:
        raise Conflict("The request could not be confirmed (concurrent changes); try again.")
    if confirmed:
        repository.add_event(session, request_id, "confirmed", actor="email-link")
        await session.commit()
        metrics.CONFIRMATIONS_CONFIRMED.inc()
        log.info("email_request_confirmed", request_id=str(request_id))
        confirmed_request = await repository.get_request_fresh(session, request_id)
        await session.commit()
        return ConfirmOutcome("confirmed", confirmed_request)
    await session.rollback()
    current = await repository.get_request_fresh(session, request_id)
    await session.commit()
    assert current is not None
    state = _link_state(current, now)
    return ConfirmOutcome("used" if state == "valid" else state, current)


async def _close_as_duplicate(
    session: AsyncSession,
    request_id: uuid.UUID,
    from_status: RequestStatus,
    kind: RequestKind,
    key: str,
    *,
    actor: str,
    values: dict[str, Any] | None = None,
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
        values={"status_reason": f"duplicate of request {other.id}", "run_after": now}
        | (values or {}),
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


async def expire_confirmations(
    session: AsyncSession, now: datetime, *, actor: str = "system"
) -> int:
    """Cancel requests whose link expired unconfirmed (reason recorded); how many."""
    expired = await repository.expire_confirmations(session, now, EXPIRED_REASON)
    for request_id in expired:
        repository.add_event(session, request_id, "confirmation_expired", actor=actor)
    await session.commit()
    if expired:
        metrics.CONFIRMATIONS_EXPIRED.inc(len(expired))
        log.info("email_confirmations_expired", count=len(expired))
    return len(expired)


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


# --- review by an operator ----------------------------------------------------------


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
    many candidates there are. When a verified request for the (corrected) subject is open
    already, this one is closed as its duplicate instead (``cancelled``, the reason names
    the open one). 404 unknown; 409 another status; 422 an invalid subject; 503 the
    SoundOps database is needed to check the choice and cannot be reached."""
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
    elif shown is not None:
        candidates = [
            (str(c.tenant_id), str(c.instagram_account_id) if c.instagram_account_id else None)
            for c in shown.candidates
        ]
    else:  # filed without what the review shows: the named subject as it resolves now
        _, candidates = await _chosen(kind, named, {}, target)
    tenants = {tenant for tenant, _ in candidates}
    if len(tenants) != 1:
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
    values: dict[str, Any] = {"run_after": utcnow(), "pinned": pinned.model_dump()}
    if identities is not None:
        new_key = subject_key(settings.effective_hash_key, kind, identities)
        values.update(subject=identities, subject_key=new_key)
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
            if await _close_as_duplicate(
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
                extra={"errors": [{"loc": ["body", "subject", "tenant_id"], "msg": "not a UUID"}]},
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


# --- the confirmation mail ----------------------------------------------------------

_WHAT = {
    RequestKind.account: "your SoundOps account and all of its data",
    RequestKind.meta_data: "the data SoundOps received from Facebook or Instagram for your account",
}


def confirmation_text(link: str, kind: RequestKind, expires_at: datetime | None) -> str:
    expiry = f" and expires on {expires_at:%d %B %Y, %H:%M} UTC" if expires_at else ""
    return "\n".join(
        [
            "Hello,",
            "",
            f"SoundOps received an e-mail asking to delete {_WHAT[kind]}.",
            "This address is on file for it, so we ask you to confirm.",
            "",
            "Nothing has been deleted. To confirm, open this link and press the button",
            "on the page, which shows what will be deleted:",
            "",
            link,
            "",
            f"The link works once{expiry}.",
            "If you did not ask for this, ignore this message: nothing will be deleted.",
            "",
            "This is an automatic message.",
            "SoundOps",
        ]
    )


async def send_confirmation_link(
    settings: Settings,
    to: str,
    link: str,
    kind: RequestKind | str,
    *,
    expires_at: datetime | None = None,
) -> None:
    """Mail the one-time link to an address on file (``DELETION_SMTP_URL``, from
    ``DELETION_MAIL_FROM``). Names no subject; raises ``DeliveryFailed``."""
    if not settings.smtp_url:
        raise DeliveryFailed("DELETION_SMTP_URL is not set")
    if "@" not in to or any(c in to for c in "\r\n"):
        raise DeliveryFailed("not a deliverable address")
    await send_email(
        settings, to, CONFIRM_SUBJECT, confirmation_text(link, RequestKind(kind), expires_at)
    )
    metrics.CONFIRMATIONS_SENT.inc()


# --- for the routers and the CLI ----------------------------------------------------


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
            return await confirm(session, token, settings=self._settings)

    async def approve(
        self, request_id: uuid.UUID, *, operator: str, subject: Mapping[str, Any] | None = None
    ) -> DeletionRequest:
        async with self._sessions() as session:
            return await approve(
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
            return await reject(session, request_id, operator=operator, reason=reason)


# --- links that were never mailed ---------------------------------------------------

CONFIRMATION_SENT = "confirmation_sent"
# How old an unmailed link must be before a worker mails it: the intake that filed the
# request is then surely not still sending it.
UNSENT_GRACE = timedelta(minutes=5)


async def mail_link(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    request: DeletionRequest,
    token: str,
    *,
    actor: str = REQUESTED_BY,
) -> None:
    """Mail the one-time link to every address on file of the request, then record that it
    went (event ``confirmation_sent``). Raises ``DeliveryFailed``: nothing is recorded, so
    it is mailed again later (a new link then; this one stops working)."""
    link = confirmation_link(settings, token)
    for address in request.confirm_recipients or []:
        await send_confirmation_link(
            settings, address, link, request.kind, expires_at=request.confirm_expires_at
        )
    async with sessionmaker() as session:
        repository.add_event(session, request.id, CONFIRMATION_SENT, actor=actor)
        await session.commit()


async def mail_if_never_sent(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    request_id: uuid.UUID,
    *,
    actor: str = REQUESTED_BY,
) -> bool:
    """For a request still awaiting confirmation whose link never went out (SMTP was down
    when it was filed): a fresh link, mailed now. False when there was nothing to do."""
    async with sessionmaker() as session:
        request = await repository.get_request_fresh(session, request_id)
        sent = await repository.has_event(session, request_id, CONFIRMATION_SENT)
        await session.commit()
    if request is None or request.status != RequestStatus.awaiting_confirmation or sent:
        return False
    async with sessionmaker() as session:
        token = await reissue_confirmation(session, request_id, settings=settings)
    if token is None:
        return False
    await mail_link(settings, sessionmaker, request, token, actor=actor)
    return True


async def mail_unsent_links(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    now: datetime,
    *,
    actor: str,
) -> int:
    """The worker's sweep: mail the links that intake filed but could not mail (and whose
    message was not delivered again). Stops at the first delivery failure."""
    if not settings.smtp_url:
        return 0
    async with sessionmaker() as session:
        waiting = await repository.unsent_confirmations(
            session, now - UNSENT_GRACE, CONFIRMATION_SENT
        )
        await session.commit()
    mailed = 0
    for request_id in waiting:
        try:
            mailed += await mail_if_never_sent(settings, sessionmaker, request_id, actor=actor)
        except DeliveryFailed as exc:
            log.warning("confirmation_not_sent", request_id=str(request_id), error=str(exc))
            break
    return mailed
