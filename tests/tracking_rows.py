"""Rows of the tracking store that repository and execution tests start from."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from app.models import DeletionRequest, DeletionTask, RequestKind, RequestStatus


def running_request(**columns: Any) -> DeletionRequest:
    """A running account request for a fresh site name, due in 30 days (not stored);
    ``columns`` set or override its columns (a lease, ``run_after``)."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "kind": RequestKind.account.value,
        "status": RequestStatus.running.value,
        "requested_by": "test",
        "subject": {"site_name": uuid.uuid4().hex},
        "subject_key": uuid.uuid4().hex,
        "confirmation_code": uuid.uuid4().hex,
        "due_at": now + timedelta(days=30),
        **columns,
    }
    return DeletionRequest(**values)


def two_tasks() -> tuple[DeletionTask, DeletionTask]:
    """A postgres task (position 0) and a mongodb task (position 1), pending, not stored."""
    first, second = (
        DeletionTask(id=uuid.uuid4(), purger=name, position=i, after=[], deleted={}, retained={})
        for i, name in enumerate(("postgres", "mongodb"))
    )
    return first, second
