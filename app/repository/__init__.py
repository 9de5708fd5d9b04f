"""All SQL over the service's own tables, one module per aggregate.

- ``requests``: reading and listing requests, status transitions, subject hashes, intake
- ``events``: a request's event log
- ``queue``: claim under a lease, heartbeat, fence, release, queue depth
- ``tasks``: a request's tasks and their outcomes
- ``email_intake``: messages handled once, confirmation links, expiries, reply slots
- ``deauthorizations``: Meta's deauthorize callbacks, recorded then expanded
- ``operator_notices``: notices of failed and overdue requests, made once, delivered
- ``leases``: named, expiring leases on jobs one worker at a time runs (retention)
- ``stats``: what the metrics endpoint reads at scrape time
- ``holds``: legal holds, and putting on hold / resuming the requests they match

This package's interface (a deliberate re-export, issue #15): its public names are
re-exported here, so callers write ``from app import repository`` and
``repository.get_request(...)`` without knowing which module holds what. Only this
module re-exports; the modules import each other directly.

What a caller may change on a row is typed: ``RequestChanges``, ``TaskChanges`` and
``DeauthorizationChanges`` name the columns, no ``**values: Any``.
"""

from __future__ import annotations

from app.repository.deauthorizations import (
    DeauthorizationChanges,
    claim_deauthorization,
    claim_due_deauthorizations,
    deauthorization_by_replay_key,
    due_deauthorizations,
    finish_deauthorization,
    insert_deauthorization,
)
from app.repository.driver import begin as begin_driver
from app.repository.driver import end as end_driver
from app.repository.email_intake import (
    add_email_intake,
    confirm_request,
    expire_confirmations,
    expire_reviews,
    get_email_intake,
    get_request_by_confirm_token_hash,
    set_confirm_token,
    take_reply_slot,
    unsent_confirmations,
)
from app.repository.events import (
    add_event,
    event_row,
    has_event,
    insert_events,
    list_events,
)
from app.repository.holds import (
    HoldStats,
    add_hold,
    get_hold,
    hold_stats,
    hold_waiting_requests,
    is_held,
    list_holds,
    release_hold,
    request_is_held,
    resume_released_requests,
)
from app.repository.leases import release_lease, take_lease
from app.repository.operator_notices import (
    NoticeChanges,
    UnnotifiedEvent,
    add_operator_notice,
    claim_operator_notice,
    due_operator_notices,
    failure_notice_delivered,
    finish_operator_notice,
    unnotified_events,
)
from app.repository.queue import (
    SHORT_KINDS,
    WORKABLE,
    Claim,
    claim_batch,
    claim_next,
    extend_lease,
    fence,
    get_requests_with_tasks,
    holds_lease,
    queue_depth,
    release,
)
from app.repository.requests import (
    InvalidCursor,
    RequestChanges,
    RequestFilter,
    add_subject_hashes,
    deadline_candidates,
    decode_cursor,
    encode_cursor,
    get_open_request_for_subject,
    get_request,
    get_request_by_code,
    get_request_by_idempotency_key,
    get_request_fresh,
    get_request_with_tasks,
    insert_new_request,
    insert_request_rows,
    list_requests,
    mark_deadline,
    new_row,
    replace_subject_hashes,
    set_values,
    transition_request,
)
from app.repository.stats import (
    QueueStats,
    queue_stats,
)
from app.repository.tasks import (
    TaskChanges,
    get_tasks,
    new_task,
    reset_failed_tasks,
    update_task,
    update_tasks,
)

__all__ = [
    "SHORT_KINDS",
    "WORKABLE",
    "Claim",
    "DeauthorizationChanges",
    "HoldStats",
    "InvalidCursor",
    "NoticeChanges",
    "QueueStats",
    "RequestChanges",
    "RequestFilter",
    "TaskChanges",
    "UnnotifiedEvent",
    "add_email_intake",
    "add_event",
    "add_hold",
    "add_operator_notice",
    "add_subject_hashes",
    "begin_driver",
    "claim_batch",
    "claim_deauthorization",
    "claim_due_deauthorizations",
    "claim_next",
    "claim_operator_notice",
    "confirm_request",
    "deadline_candidates",
    "deauthorization_by_replay_key",
    "decode_cursor",
    "due_deauthorizations",
    "due_operator_notices",
    "encode_cursor",
    "end_driver",
    "event_row",
    "expire_confirmations",
    "expire_reviews",
    "extend_lease",
    "failure_notice_delivered",
    "fence",
    "finish_deauthorization",
    "finish_operator_notice",
    "get_email_intake",
    "get_hold",
    "get_open_request_for_subject",
    "get_request",
    "get_request_by_code",
    "get_request_by_confirm_token_hash",
    "get_request_by_idempotency_key",
    "get_request_fresh",
    "get_request_with_tasks",
    "get_requests_with_tasks",
    "get_tasks",
    "has_event",
    "hold_stats",
    "hold_waiting_requests",
    "holds_lease",
    "insert_deauthorization",
    "insert_events",
    "insert_new_request",
    "insert_request_rows",
    "is_held",
    "list_events",
    "list_holds",
    "list_requests",
    "mark_deadline",
    "new_row",
    "new_task",
    "queue_depth",
    "queue_stats",
    "release",
    "release_hold",
    "release_lease",
    "replace_subject_hashes",
    "request_is_held",
    "reset_failed_tasks",
    "resume_released_requests",
    "set_confirm_token",
    "set_values",
    "take_lease",
    "take_reply_slot",
    "transition_request",
    "unnotified_events",
    "unsent_confirmations",
    "update_task",
    "update_tasks",
]
