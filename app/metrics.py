"""Prometheus metrics. Low cardinality: labels are kinds, statuses, purgers, outcomes only.

Counters and histograms count what this process did (a worker's tasks); the gauges about
the queue (open, overdue, oldest open request, queue lag) are read from the tracking
database at scrape time, so every process reports the same, whole-service view.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import OPEN_STATUSES, utcnow
from app.repository.holds import hold_stats
from app.repository.stats import queue_stats

# No `*_created` series: one per labelled counter and histogram, useless for alerting, and
# they double what a scrape carries.
disable_created_metrics()  # type: ignore[no-untyped-call]

# HTTP requests, by route template (`/v1/deletion-requests/{request_id}`), never by path:
# paths carry ids and status-page codes.
HTTP_REQUESTS = Counter(
    "deletion_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "deletion_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Liveness of the background processes, for alerts: a worker that stopped turning, a
# mailbox that cannot be read.
WORKER_HEARTBEAT = Gauge(
    "deletion_worker_heartbeat_timestamp_seconds",
    "When this process's worker loop last turned (Unix time).",
)
MAILBOX_POLLS = Counter(
    "deletion_email_polls_total", "Polls of the privacy@ mailbox, by result.", ["result"]
)
MAILBOX_LAST_SUCCESS = Gauge(
    "deletion_email_last_successful_poll_timestamp_seconds",
    "When the privacy@ mailbox was last read successfully (Unix time).",
)

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
HOLDS_ACTIVE = Gauge("deletion_holds_active", "Legal holds in force.")
HOLD_OLDEST = Gauge(
    "deletion_hold_oldest_seconds", "Age of the oldest legal hold in force (0: none)."
)
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

# Notices to the operators of failed and overdue requests.
OPERATOR_NOTICES = Counter(
    "deletion_operator_notices_total",
    "Notices to the operators (event deletion.failed or deletion.overdue): sent, retrying "
    "(a channel failed; tried again later), unconfigured (no operator e-mail or webhook).",
    ["event", "outcome"],
)


async def refresh(tracking_db: AsyncEngine, now: datetime | None = None) -> None:
    """Read the queue gauges from the tracking database."""
    now = now or utcnow()
    async with tracking_db.connect() as conn:
        stats = await queue_stats(conn, now)
        holds = await hold_stats(conn)
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
    HOLDS_ACTIVE.set(holds.active)
    HOLD_OLDEST.set(_age(holds.oldest, now))


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
