"""The names of the purgers, the contract each one implements, and its typed outcomes.

A purger deletes one store's data about a subject. It must be idempotent:
running ``purge`` twice deletes nothing extra, and ``verify`` afterwards still
finds nothing. Outcomes are types:

- return normally: the step is done (``succeeded`` once ``verify`` finds nothing);
- raise :class:`PurgeRetriable`: a transient problem, tried again later (``retrying``);
- raise :class:`PurgeNotApplicable`: nothing to do here (``skipped``, with the reason);
- raise anything else: ``failed``, kept for an operator.

Messages of these exceptions are shown to operators: they never carry
identifiers of the subject.

Progress: a purger that deletes in batches reports each batch once it is committed,
``await subject.progress.deleted({table: count})``. The engine adds what is reported to
the task's counts in the tracking store at once, so an attempt that is cut off (a crash,
a timeout, a lost lease, an outage) still counts what it deleted, and the next attempt
adds only what it finds left. ``PurgeResult.deleted`` is what the whole attempt deleted
(reported or not; each key counts once per attempt).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from app.datamap import Resolution
from app.models import RequestKind
from app.pii import Pii

if TYPE_CHECKING:  # the settings name purgers: only the types are needed here
    from app.datamap import DataMap
    from app.settings import Settings
    from app.stores import Stores


class PurgerName(StrEnum):
    """Every store the service deletes from; the value is the task's ``purger`` field."""

    postgres = "postgres"
    mongodb = "mongodb"
    s3 = "s3"
    meta_graph = "meta_graph"


class Progress(Protocol):
    """Where a purge reports what it has durably deleted, batch by batch."""

    async def deleted(self, counts: Mapping[str, int]) -> None:
        """``counts`` (per table, collection or bucket) were deleted by a batch that is now
        committed; report each batch exactly once, and never from ``preview``."""
        ...


class _NoProgress:
    """Progress nobody records: previews, and purgers run outside the engine."""

    async def deleted(self, counts: Mapping[str, int]) -> None:
        return None


NO_PROGRESS: Progress = _NoProgress()


@dataclass(frozen=True)
class Subject:
    """Whom a request is about. Identities are masked: ``str()`` and logs show ``***``.

    ``resolution`` is what the identities resolved to before any purging began
    (tenant ids, account ids, Instagram user ids): purgers select by it, so a
    purger that runs after another has deleted the account rows still finds
    its data.

    ``progress`` is where ``purge`` reports each committed batch (the engine gives every
    task its own; see :class:`Progress`).
    """

    request_id: uuid.UUID
    kind: RequestKind
    identities: dict[str, Pii]
    resolution: Resolution = field(default_factory=Resolution)
    # Meta told us the person removed the app: its permissions are already gone there.
    revoked_at_meta: bool = False
    # A disconnect: the Meta step owns the tokens. It destroys them once Meta confirmed the
    # revoke, or at this moment anyway (``DELETION_REVOKE_DEADLINE`` after the request).
    revoke_deadline: datetime | None = None
    progress: Progress = field(default=NO_PROGRESS, compare=False, repr=False)

    def get(self, name: str) -> str | None:
        value = self.identities.get(name)
        return value.reveal() if value is not None else None


@dataclass(frozen=True)
class Retained:
    count: int
    reason: str


@dataclass(frozen=True)
class PurgeResult:
    """What a purge (or a preview) deleted, or would delete, and what it keeps and why."""

    deleted: dict[str, int] = field(default_factory=dict)
    retained: dict[str, Retained] = field(default_factory=dict)


# Counts of data about the subject as a third party (what the person wrote to someone
# else's account) are kept under "<collection>.as_third_party" keys of ``deleted``, so
# that the totals stay what was deleted and the third-party part can be told apart.
AS_THIRD_PARTY = "as_third_party"


def third_party_key(name: str) -> str:
    return f"{name}.{AS_THIRD_PARTY}"


def third_party_counts(deleted: Mapping[str, int]) -> dict[str, int]:
    """Of a store's counts, those of data about the subject as a third party, by collection."""
    suffix = f".{AS_THIRD_PARTY}"
    return {k.removesuffix(suffix): v for k, v in deleted.items() if k.endswith(suffix)}


ABSENT_REASON = "not part of this deployment"
REVOKE_UNCONFIRMED_REASON = "revoke not confirmed by Meta before the deadline"
NOT_CONFIGURED_REASON = "not configured"


@dataclass(frozen=True)
class NotConfigured:
    """A store this process does not delete from: its tasks are ``skipped`` with
    :attr:`reason`. ``absent``: the deployment declared it so (``DELETION_ABSENT_STORES``);
    otherwise it merely has no settings, which only development and test accept."""

    detail: str
    absent: bool = False

    @property
    def reason(self) -> str:
        if self.absent:
            return f"{ABSENT_REASON} (DELETION_ABSENT_STORES)"
        return f"{NOT_CONFIGURED_REASON}: {self.detail}"


class SkipKind(StrEnum):
    """Why a task was skipped, as people are told it (never the same words for two)."""

    absent = "absent"  # declared not part of this deployment
    not_configured = "not_configured"  # no settings (development and test only)
    not_applicable = "not_applicable"  # the store holds nothing for this kind of request
    # A disconnect's Meta step: Meta never confirmed the revoke before the deadline; the
    # tokens were destroyed anyway, nothing is claimed about Meta.
    revoke_unconfirmed = "revoke_unconfirmed"

    @classmethod
    def of(cls, reason: str | None) -> SkipKind:
        """The kind of a skipped task's recorded reason (``DeletionTask.error``)."""
        text = (reason or "").lower()
        if text.startswith(ABSENT_REASON):
            return cls.absent
        if text.startswith(REVOKE_UNCONFIRMED_REASON.lower()):
            return cls.revoke_unconfirmed
        if NOT_CONFIGURED_REASON in text or "is not set" in text:
            return cls.not_configured
        return cls.not_applicable

    @property
    def untouched(self) -> bool:
        """The store was not looked at: nothing may be claimed about it."""
        return self in (SkipKind.absent, SkipKind.not_configured)


class PurgeRetriable(Exception):
    """A transient failure: try again, not before ``after`` when given."""

    def __init__(self, message: str, *, after: timedelta | None = None) -> None:
        super().__init__(message)
        self.after = after


class PurgeNotApplicable(Exception):
    """Nothing to do in this store for this subject or kind; the message is the reason."""


class RevokeNotConfirmed(PurgeNotApplicable):
    """A disconnect's deadline passed before Meta confirmed the revoke: the tokens are
    destroyed, the Meta step is ``skipped`` with :data:`REVOKE_UNCONFIRMED_REASON`."""

    def __init__(self, last_error: str | None = None) -> None:
        detail = f" (last answer: {last_error})" if last_error else ""
        super().__init__(f"{REVOKE_UNCONFIRMED_REASON}; the tokens were destroyed{detail}")


class PurgeFailed(Exception):
    """A permanent failure an operator has to look at."""


@runtime_checkable
class Purger(Protocol):
    @property
    def name(self) -> PurgerName:
        """Which store this purger deletes from."""
        ...

    async def preview(self, subject: Subject) -> PurgeResult:
        """What ``purge`` would delete and retain, changing nothing."""
        ...

    async def purge(self, subject: Subject) -> PurgeResult:
        """Delete the subject's data in this store; idempotent."""
        ...

    async def verify(self, subject: Subject) -> dict[str, int]:
        """What is left of the subject per table, collection or bucket (all zero when done)."""
        ...


# What a process has for each store: a purger, or why it does not delete there.
PurgerSlot = Purger | NotConfigured


class RegisteredPurger(Purger, Protocol):
    """A purger class of the registry (``app/purgers/registry.py``): it names its store
    and builds itself."""

    name: ClassVar[PurgerName]

    @classmethod
    def build(cls, settings: Settings, datamap: DataMap, stores: Stores) -> PurgerSlot:
        """This store's purger, from the settings and the clients the lifespan opened;
        :class:`NotConfigured` (naming the setting) when its settings are absent. Settings
        that are present but unusable raise :class:`app.stores.StoreConfigError`."""
        ...
