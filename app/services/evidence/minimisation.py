"""What minimising a finished request means: it keeps evidence, not personal data.

Once its confirmations are sent (or given up), a completed or cancelled request keeps
its facts (kind, dates, per store what was deleted and retained) and loses every raw
identifier: the subject becomes keyed hashes, addresses,
the resolution, the pin and the review are dropped, and an operator's free text (which
may name the person) gives way to the plain fact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.models import (
    CANCELLED_REASON,
    REJECTED_REASON,
    SERVICE_REASONS,
    DeletionRequest,
    RequestStatus,
    utcnow,
)
from app.repository import RequestChanges
from app.services.identities import identity_hash


def hashed_subject(subject: Mapping[str, Any], hash_key: bytes) -> dict[str, str]:
    """A subject as minimisation keeps it: each identity's keyed hash (a request's, a
    released legal hold's), findable again by ``identity=value`` but not readable."""
    return {
        name: "hmac-sha256:" + identity_hash(hash_key, name, str(value))
        for name, value in subject.items()
    }


def minimised(request: DeletionRequest, hash_key: bytes, *, rejected: bool) -> RequestChanges:
    """The request's columns with every raw identifier replaced by a keyed hash, or gone,
    and no free text of an operator's (it may name the person)."""
    return {
        "subject": hashed_subject(request.subject, hash_key),
        "notify_email": None,
        "confirm_recipients": None,
        "reason": None,
        "status_reason": status_reason_kept(request, rejected=rejected),
        "resolution": None,
        "pinned": None,
        "review": None,
        "minimised_at": utcnow(),
    }


def status_reason_kept(request: DeletionRequest, *, rejected: bool) -> str | None:
    """The status reason a minimised request keeps: the service's own words as they are;
    an operator's replaced by the fact (rejected, or cancelled by an operator)."""
    reason = request.status_reason
    if request.status != RequestStatus.cancelled or reason is None or reason in SERVICE_REASONS:
        return reason
    return REJECTED_REASON if rejected else CANCELLED_REASON
