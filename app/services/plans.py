"""Which purgers run for which kind of request, and what each must wait for.

This is data, not code paths: the engine reads a plan and nothing else decides
which stores a kind touches.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.models import RequestKind
from app.purgers.base import PurgerName


@dataclass(frozen=True)
class PlannedTask:
    purger: PurgerName
    after: tuple[PurgerName, ...] = ()


# The Meta Graph step needs the access tokens that the PostgreSQL purger deletes,
# so PostgreSQL waits for it; everything else runs concurrently.
_WITH_GRAPH_FIRST = (
    PlannedTask(PurgerName.meta_graph),
    PlannedTask(PurgerName.postgres, after=(PurgerName.meta_graph,)),
    PlannedTask(PurgerName.mongodb),
)

# A disconnect cuts at once: the PostgreSQL step (cancel scheduled posts, disable
# automations, mark the account disconnected) waits for nothing. It leaves the token
# columns alone: the Meta step keeps the tokens only to revoke at Meta and destroys them
# itself, after the revoke or at DELETION_REVOKE_DEADLINE anyway.
_CUT_AT_ONCE = (
    PlannedTask(PurgerName.postgres),
    PlannedTask(PurgerName.meta_graph),
    PlannedTask(PurgerName.mongodb),
)

PLANS: dict[RequestKind, tuple[PlannedTask, ...]] = {
    RequestKind.account: (*_WITH_GRAPH_FIRST, PlannedTask(PurgerName.s3)),
    RequestKind.meta_data: (*_WITH_GRAPH_FIRST, PlannedTask(PurgerName.s3)),
    # A disconnect keeps cached media (it expires by the bucket's 30-day rule).
    RequestKind.instagram_disconnect: _CUT_AT_ONCE,
}


def plan_for(kind: RequestKind) -> tuple[PlannedTask, ...]:
    return PLANS[kind]


def planned_purgers() -> frozenset[PurgerName]:
    """Every store that some kind of request deletes from."""
    return frozenset(task.purger for plan in PLANS.values() for task in plan)
