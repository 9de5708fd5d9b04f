"""After a request is finished: its confirmations (webhook, e-mail), then minimisation.

A request that completed goes on to this step under the claim that ran it; a cancelled
request is claimed for it. The step sends what confirmations are pending; one that
failed releases the request to be claimed again after a backoff, up to ``max_attempts``.
Then it minimises the request (its raw identifiers replaced by keyed hashes, or gone),
stores its receipt anew (now saying the subject is minimised), and releases it for good.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import repository
from app.models import DeletionRequest, DeletionTask, utcnow
from app.names import normalise
from app.pii import keyed_hash
from app.repository import RequestChanges
from app.services.claims import completion_sentence, store_claim
from app.services.evidence import receipts
from app.services.evidence.minimisation import minimised
from app.services.evidence.notices import (
    DeliveryFailed,
    completion_text,
    deliver,
    send_email,
    send_webhook,
)
from app.services.execution.lease import Leases, backoff
from app.settings import Settings

EMAIL_SUBJECT = "Your SoundOps data deletion is complete"


class Completion:
    """Sends a finished request's confirmations, then minimises it."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        leases: Leases,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self._sessions = sessionmaker
        self._leases = leases
        self._http = http
        self._receipt_key = receipts.private_key(settings)

    async def notify_and_minimise(self, request_id: uuid.UUID) -> None:
        """Send the pending confirmations of a claimed, finished request; release it to try
        again later if one failed, else minimise it (its receipt made anew) and release it
        for good."""
        async with self._sessions() as session:
            request = await repository.get_request(session, request_id)
            assert request is not None
            tasks = list(await repository.get_tasks(session, request_id))
        payload = completion_payload(request, tasks, self.settings.public_base_url)
        targets = email_targets(request)
        # Addresses that took the e-mail in an earlier attempt (keyed hashes): not again.
        emailed = set(await self._emailed_before(request_id))
        senders: dict[str, Callable[[], Awaitable[None]]] = {}
        if request.webhook_status == "pending" and self._http is not None:
            http = self._http
            senders["webhook"] = lambda: send_webhook(http, self.settings, payload)
        if request.email_status == "pending" and targets:
            senders["email"] = lambda: self._email_each(targets, completion_text(payload), emailed)
        attempts = request.notify_attempts + (1 if senders else 0)
        statuses: dict[str, str | None] = {
            "webhook": request.webhook_status,
            "email": request.email_status,
        }
        errors = await deliver(senders, statuses, give_up=attempts >= self.settings.max_attempts)
        retrying = any(statuses[channel] == "pending" for channel in errors)
        changes: RequestChanges = {
            "webhook_status": statuses["webhook"],
            "email_status": statuses["email"],
            "notify_attempts": attempts,
        }
        async with self._leases.transition(request_id) as tx:
            for channel in senders:
                if statuses[channel] != "pending":
                    detail: dict[str, Any] = {"attempts": attempts}
                    if channel in errors:
                        detail["error"] = errors[channel]
                    if channel == "email":
                        detail["recipients"] = len(targets)
                    tx.record(f"{channel}_{statuses[channel]}", detail)
            if retrying:
                next_at = utcnow() + backoff(self.settings, attempts)
                tx.record(
                    "confirmation_retrying",
                    {
                        "errors": errors,
                        "next_attempt_at": next_at.isoformat(),
                        "emailed": sorted(emailed),
                    },
                )
                changes["run_after"] = next_at
            else:
                # Confirmed (or given up): keep evidence, not personal data.
                rejected = await repository.has_event(tx.session, request_id, "rejected")
                changes["run_after"] = None
                changes.update(
                    minimised(request, self.settings.effective_hash_key, rejected=rejected)
                )
                tx.record("minimised")
            await tx.release(**changes)
            if not retrying:
                await receipts.issue(
                    tx.session, request_id, self._receipt_key, self.settings.backup_retention_days
                )

    async def _emailed_before(self, request_id: uuid.UUID) -> list[str]:
        async with self._sessions() as session:
            events = await repository.list_events(session, request_id)
        retries = [e.detail for e in events if e.type == "confirmation_retrying"]
        return [str(h) for h in retries[-1].get("emailed", [])] if retries else []

    async def _email_each(self, targets: list[str], text: str, emailed: set[str]) -> None:
        """One message to each address (none sees another's), skipping those in
        ``emailed`` and adding each that took it; raises the last failure after trying all."""
        failure: DeliveryFailed | None = None
        for address in targets:
            key = keyed_hash(self.settings.effective_hash_key, "notify=" + normalise(address))
            if key in emailed:
                continue
            try:
                await send_email(self.settings, address, EMAIL_SUBJECT, text)
            except DeliveryFailed as exc:
                failure = exc
                continue
            emailed.add(key)
        if failure is not None:
            raise failure


def email_targets(request: DeletionRequest) -> list[str]:
    """Every address on file for the request, each once (compared normalised), in this
    order: the address asked for (``notify_email``: given to the API, or the sender of an
    e-mailed request that an operator approved); the addresses on file that the
    confirmation link of an e-mailed request went to; the owner's addresses read at
    resolution, before the account was deleted."""
    owners = (request.resolution or {}).get("owner_emails") or []
    candidates = [request.notify_email, *(request.confirm_recipients or []), *owners]
    seen: set[str] = set()
    targets: list[str] = []
    for address in candidates:
        if not address or normalise(str(address)) in seen:
            continue
        seen.add(normalise(str(address)))
        targets.append(str(address))
    return targets


def completion_payload(
    request: DeletionRequest, tasks: list[DeletionTask], public_base_url: str
) -> dict[str, Any]:
    """What the confirmations say: no identifier of the subject, only the request's facts
    (per store: verified, or skipped and why, in the words of ``services/claims.py``)."""
    claims = [store_claim(task) for task in tasks]
    return {
        "event": "deletion.completed",
        "request_id": str(request.id),
        "kind": request.kind,
        "status": request.status,
        "created_at": request.created_at.isoformat(),
        "completed_at": request.completed_at.isoformat() if request.completed_at else None,
        "due_at": request.due_at.isoformat(),
        "status_url": f"{public_base_url}/deletion-status/{request.confirmation_code}",
        "summary": completion_sentence(claims),
        "stores": [
            {
                "store": task.purger,
                "status": task.status,
                "verified": claim.verified,
                "outcome": claim.text,
                "skipped": claim.skipped.value if claim.skipped else None,
                "deleted": dict(task.deleted),
                "retained": dict(task.retained),
            }
            for task, claim in zip(tasks, claims, strict=True)
        ],
    }
