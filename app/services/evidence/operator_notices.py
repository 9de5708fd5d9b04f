"""Notices to the operators: a request that failed or passed its ``due_at`` is mailed to
``DELETION_OPERATOR_EMAIL`` and sent to the webhook as ``deletion.failed`` /
``deletion.overdue``.

- **Made once per event.** Each ``failed`` / ``overdue`` event of a request's log gets one
  notice row (unique ``event_id``), whichever worker sees it first, whatever path led
  there (a purger's permanent failure, retries run out, a resolution that failed). An
  operator's retry that fails again is a new ``failed`` event: a new notice.
- **Delivered until taken.** A due notice is delivered under a lease; a channel that
  took it is ``sent`` and not tried again; one that failed is tried again after the
  completion webhook's backoff. Unlike a completion, it is never given up: it holds no
  personal data and nothing waits on it. A worker that dies mid-delivery leaves a lease
  that expires: the notice may then arrive twice, each time with the same ``notice_id``.
- **No personal data.** The payload is built from the request's facts only: id, kind,
  status, due date, per store its status and the class of its error (never the error's
  text), links to the admin page and the API.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import metrics, repository
from app.models import DeletionRequest, DeletionTask, OperatorNotice, TaskStatus, utcnow
from app.services.evidence.notices import deliver, send_email, send_webhook
from app.settings import Settings

log = structlog.get_logger(__name__)

SUBJECTS = {
    "deletion.failed": "[SoundOps deletion] request {id} failed",
    "deletion.overdue": "[SoundOps deletion] request {id} is overdue",
}
_SETTLED = {TaskStatus.succeeded.value, TaskStatus.skipped.value}


def error_class(task: DeletionTask) -> str | None:
    """What kind of error a task's last one was, in a word: the text itself stays on the
    admin page (it is safe there, but a notice travels further)."""
    error = task.error or ""
    if task.status in _SETTLED or not error:
        return None
    if error.startswith("gave up after"):
        return "retries_exhausted"
    if error.startswith("unexpected error"):
        return "unexpected_error"
    if error == "timed out":
        return "timed_out"
    if task.status == TaskStatus.failed:
        return "permanent"
    return "transient"


def operator_payload(
    event: str,
    notice_id: uuid.UUID,
    request: DeletionRequest,
    tasks: list[DeletionTask],
    public_base_url: str,
) -> dict[str, Any]:
    """What a notice says: facts about the request, no identifier of its subject."""
    stores = [
        {
            "store": task.purger,
            "status": task.status,
            "attempts": task.attempts,
            "error_class": error_class(task),
        }
        for task in tasks
        if task.status not in _SETTLED
    ]
    failed_step = None
    if request.status == "failed":
        failed_step = (
            "stores" if any(t.status == TaskStatus.failed for t in tasks) else "resolution"
        )
    return {
        "event": event,
        "notice_id": str(notice_id),
        "request_id": str(request.id),
        "kind": request.kind,
        "source": request.source,
        "status": request.status,
        "failed_step": failed_step,
        "created_at": request.created_at.isoformat(),
        "due_at": request.due_at.isoformat(),
        "stores": stores,
        "admin_url": f"{public_base_url}/admin/requests/{request.id}",
        "api_url": f"{public_base_url}/v1/deletion-requests/{request.id}",
    }


def operator_text(payload: dict[str, Any]) -> str:
    """The operators' e-mail: the payload in plain words."""
    what = "failed" if payload["event"] == "deletion.failed" else "passed its due date while open"
    lines = [
        f"Deletion request {payload['request_id']} ({payload['kind']}) {what}.",
        "",
        f"Status: {payload['status']}"
        + (f" (at the {payload['failed_step']} step)" if payload["failed_step"] else ""),
        f"Received: {payload['created_at']}",
        f"Due: {payload['due_at']}",
        "",
        "Stores not done:" if payload["stores"] else "Every store is done.",
    ]
    for store in payload["stores"]:
        error = f", {store['error_class']}" if store["error_class"] else ""
        lines.append(
            f"- {store['store']}: {store['status']} after {store['attempts']} attempt(s){error}"
        )
    lines += [
        "",
        f"Admin: {payload['admin_url']}",
        f"API: {payload['api_url']}",
        f"Notice: {payload['notice_id']} ({payload['event']})",
    ]
    return "\n".join(lines)


class OperatorNotices:
    """Makes the notices of new ``failed``/``overdue`` events, and delivers due ones."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self._sessions = sessionmaker
        self._http = http

    async def make_new(self, *, actor: str, limit: int = 100) -> int:
        """One notice per ``failed``/``overdue`` event that has none; how many were made
        (a second worker making the same ones at once makes none of them)."""
        settings = self.settings
        email = "pending" if settings.operator_email and settings.smtp_url else None
        webhook = "pending" if settings.notify_webhook_url else None
        made = 0
        async with self._sessions() as session:
            for found in await repository.unnotified_events(session, limit):
                request = await repository.get_request(session, found.request_id)
                assert request is not None
                tasks = list(await repository.get_tasks(session, found.request_id))
                notice_id = uuid.uuid4()
                now = utcnow()
                channels = email is not None or webhook is not None
                added = await repository.add_operator_notice(
                    session,
                    id=notice_id,
                    request_id=found.request_id,
                    event_id=found.event_id,
                    event=found.event,
                    payload=operator_payload(
                        found.event, notice_id, request, tasks, settings.public_base_url
                    ),
                    email_status=email,
                    webhook_status=webhook,
                    attempts=0,
                    created_at=now,
                    run_after=now if channels else None,
                )
                if not added:
                    continue
                made += 1
                if not channels:
                    repository.add_event(
                        session,
                        found.request_id,
                        "operator_not_notified",
                        actor=actor,
                        detail={"event": found.event, "why": "no operator e-mail or webhook"},
                    )
                    metrics.OPERATOR_NOTICES.labels(event=found.event, outcome="unconfigured").inc()
                    log.error(
                        "operator_notice_unconfigured",
                        notice=found.event,
                        request_id=str(found.request_id),
                    )
            await session.commit()
        return made

    async def deliver_due(
        self, *, owner: str, lease: timedelta, retry_after: Callable[[int], timedelta]
    ) -> int:
        """Deliver the due notices, each under a lease; how many were fully delivered."""
        async with self._sessions() as session:
            due = await repository.due_operator_notices(session, utcnow())
            await session.commit()
        delivered = 0
        for notice_id in due:
            async with self._sessions() as session:
                notice = await repository.claim_operator_notice(
                    session, notice_id, owner, utcnow(), lease
                )
            if notice is None:
                continue  # another worker has it, or had it
            delivered += await self._deliver(notice, owner, retry_after)
        return delivered

    async def _deliver(
        self, notice: OperatorNotice, owner: str, retry_after: Callable[[int], timedelta]
    ) -> int:
        settings, payload = self.settings, notice.payload
        senders: dict[str, Callable[[], Awaitable[None]]] = {}
        if notice.webhook_status == "pending" and self._http is not None:
            http = self._http
            senders["webhook"] = lambda: send_webhook(http, settings, payload)
        if notice.email_status == "pending" and settings.operator_email and settings.smtp_url:
            to = settings.operator_email
            subject = SUBJECTS[notice.event].format(id=payload["request_id"])
            senders["email"] = lambda: send_email(settings, to, subject, operator_text(payload))
        statuses: dict[str, str | None] = {
            "webhook": notice.webhook_status,
            "email": notice.email_status,
        }
        errors = await deliver(senders, statuses, give_up=False)
        now = utcnow()
        changes: repository.NoticeChanges = {
            "email_status": statuses["email"],
            "webhook_status": statuses["webhook"],
        }
        detail: dict[str, Any] = {"event": notice.event, "attempts": notice.attempts}
        if errors:
            next_at = now + retry_after(notice.attempts)
            changes["run_after"] = next_at
            detail.update(errors=errors, next_attempt_at=next_at.isoformat())
            outcome = "retrying"
        else:
            changes["run_after"] = None
            changes["delivered_at"] = now
            detail["channels"] = sorted(senders)
            outcome = "sent"
        async with self._sessions() as session:
            if not await repository.finish_operator_notice(session, notice.id, owner, changes):
                await session.rollback()
                return 0  # the lease ran out: whoever took it over records it
            repository.add_event(
                session, notice.request_id, f"operator_notice_{outcome}", actor=owner, detail=detail
            )
            await session.commit()
        metrics.OPERATOR_NOTICES.labels(event=notice.event, outcome=outcome).inc()
        log_line = log.warning if errors else log.info
        log_line(
            f"operator_notice_{outcome}",
            notice=notice.event,
            request_id=str(notice.request_id),
            errors=json.dumps(errors) if errors else None,
        )
        return 0 if errors else 1
