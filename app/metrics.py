"""Prometheus metrics. Low cardinality: labels are kinds, statuses, purgers, outcomes only.

Counters and histograms count what this process did (a worker's tasks); the gauges about
the queue (open, overdue, oldest open request, queue lag) are read from the tracking
database at scrape time, so every process reports the same, whole-service view.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import OPEN_STATUSES, utcnow
from app.repository.stats import queue_stats

TASKS = Counter("deletion_tasks_total", "Task outcomes, per purger.", ["purger", "outcome"])
TASK_SECONDS = Histogram(
    "deletion_task_duration_seconds",
    "Time of one purge + verify, per purger.",
    ["purger"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
RETRIES = Counter(
    "deletion_task_retries_total", "Transient failures retried, per purger.", ["purger"]
)
DELETED = Counter(
    "deletion_items_deleted_total",
    "Rows, documents, object versions deleted, per store.",
    ["store"],
)
GRAPH_USAGE = Gauge(
    "deletion_graph_api_usage_percent", "Highest usage percentage Meta last reported."
)
REQUESTS = Gauge("deletion_requests", "Requests, per kind and status.", ["kind", "status"])
OPEN = Gauge("deletion_requests_open", "Requests not finished yet.")
OVERDUE = Gauge("deletion_requests_overdue", "Open requests past their due date.")
OLDEST_OPEN = Gauge("deletion_oldest_open_request_age_seconds", "Age of the oldest open request.")
QUEUE_LAG = Gauge(
    "deletion_queue_lag_seconds", "How long the longest-waiting due request has waited."
)
# Requests by e-mail: the one-time confirmation links.
CONFIRMATIONS_SENT = Counter(
    "deletion_email_confirmations_sent_total", "Confirmation links mailed to an address on file."
)
CONFIRMATIONS_CONFIRMED = Counter(
    "deletion_email_confirmations_confirmed_total", "Requests confirmed from their link's page."
)
CONFIRMATIONS_EXPIRED = Counter(
    "deletion_email_confirmations_expired_total",
    "Requests cancelled because their confirmation link expired unused.",
)

# Requests by e-mail: the messages themselves, and the automatic replies.
INBOUND_MESSAGES = Counter(
    "deletion_email_messages_total",
    "E-mails handled, by outcome (awaiting_confirmation, needs_review, duplicate, ignored, "
    "too_large, error) and way in (http, imap).",
    ["outcome", "via"],
)
INBOUND_REPLIES = Counter(
    "deletion_email_replies_total",
    "Explanatory replies to ignored messages: sent, automatic (never to automatic senders), "
    "rate_limited (one a day per address), not_sent (no usable address), failed.",
    ["result"],
)


async def refresh(tracking_db: AsyncEngine, now: datetime | None = None) -> None:
    """Read the queue gauges from the tracking database."""
    now = now or utcnow()
    async with tracking_db.connect() as conn:
        stats = await queue_stats(conn, now)
    open_statuses = {s.value for s in OPEN_STATUSES}
    REQUESTS.clear()
    open_total = 0
    for kind, status, count in stats.counts:
        REQUESTS.labels(kind=kind, status=status).set(count)
        if status in open_statuses:
            open_total += count
    OPEN.set(open_total)
    OVERDUE.set(stats.overdue)
    OLDEST_OPEN.set(_age(stats.oldest_open, now))
    QUEUE_LAG.set(_age(stats.oldest_waiting, now))


def _age(value: datetime | None, now: datetime) -> float:
    if value is None:
        return 0.0
    if value.tzinfo is None:  # SQLite: stored as naive UTC
        value = value.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - value).total_seconds())


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


# Retention (SoundOps' automatic deletion of Instagram data): set by the worker that ran
# the last pass. ``location`` is ``database.collection`` or the bucket: never personal data.
RETENTION_OLDEST = Gauge(
    "deletion_retention_oldest_seconds",
    "Age of the oldest Instagram document or cached object left, per store and location; "
    "above DELETION_INSTAGRAM_RETENTION means retention is not enforced there.",
    ["store", "location"],
)
RETENTION_SWEPT = Counter(
    "deletion_retention_swept_total",
    "Expired documents and objects the worker deleted itself (sweep mode).",
    ["store", "location"],
)
RETENTION_PASS = Gauge(
    "deletion_retention_last_pass_timestamp_seconds",
    "When this process last finished a retention pass (check, apply, sweep, measure).",
)
