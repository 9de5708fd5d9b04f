"""Did someone who is not on file write here? The look-up that tells a fan (a third-party
data subject: their only data is what they wrote to artists) from a name that matches
nothing, for an e-mailed ``meta_data`` request whose names matched no connection.

It reads the SoundOps MongoDB through the deployment's MongoDB purger (the one place that
knows the collections and the ``third_party`` matches of the data map), deletes nothing,
and asks what a request by ``ig_username`` would reach as a writer (``writer_usernames``,
the one normalisation): per username at most one equality query with limit 1 per
collection and spelling. The answer is used only to choose the review reason; the sender
learns nothing from it (every outcome is ``needs_review``).

Outcomes of :meth:`Writers.first_writer`: the first username (of at most
``MAX_CHECKED``, best first) that wrote anything; None when none did or when this
deployment has no MongoDB (nothing written can be here); :class:`WritersUnavailable` when
MongoDB did not answer within ``CHECK_SECONDS`` (the caller files the request for review
anyway, saying the check could not run: the message is never lost nor held back).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import structlog

from app.datamap import Resolution
from app.models import RequestKind
from app.purgers.base import PurgeFailed, PurgeRetriable, PurgerSlot, Subject
from app.purgers.mongodb import MongoPurger
from app.services.resolution import writer_usernames

log = structlog.get_logger(__name__)

# The whole look-up of one message, server selection included.
CHECK_SECONDS = 5.0
# Username-shaped candidates of one message that are looked up, best first.
MAX_CHECKED = 3


class WritersUnavailable(Exception):
    """MongoDB did not answer the look-up in time (or answered with an error)."""


class Writers:
    def __init__(self, purger: PurgerSlot | None, *, timeout: float = CHECK_SECONDS) -> None:
        self._purger = purger if isinstance(purger, MongoPurger) else None
        self._timeout = timeout

    async def first_writer(self, usernames: Sequence[str]) -> str | None:
        """The first of ``usernames`` (as written; the first ``MAX_CHECKED``) whose
        writings a ``meta_data`` request by that ``ig_username`` would reach."""
        if self._purger is None:
            return None
        deadline = time.monotonic() + self._timeout
        for username in usernames[:MAX_CHECKED]:
            identities = {"ig_username": username}
            resolution = Resolution(
                third_party_usernames=writer_usernames(RequestKind.meta_data, identities)
            )
            if not resolution.third_party_usernames:
                continue
            subject = Subject(uuid.uuid4(), RequestKind.meta_data, {}, resolution)
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise PurgeRetriable("MongoDB look-up out of time")
                if await self._purger.finds_third_party(subject, within=remaining):
                    return username
            except (PurgeRetriable, PurgeFailed) as exc:
                log.warning("writer_check_failed", error=str(exc))
                raise WritersUnavailable from exc
        return None
