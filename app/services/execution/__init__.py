"""Execution: the durable queue, the workers, and what they do with a claimed request.

- :mod:`.lease`: claim, heartbeat, fence, release (one fenced ``transition`` per write);
  retry backoff.
- :mod:`.runner`: resolve the subject once, run the tasks of its plan, settle the request.
- :mod:`.completion`: a finished request's confirmations, then its minimisation.
- :mod:`.sweeps`: deadlines, expiries of requests from e-mail, deferred work.
- :mod:`.engine`: one worker's executor, wired from the above; :mod:`.worker`: its loop.

The verbs for ending work: a task's outcome is *recorded*; a request is *settled* (its
status decided from its tasks); a claim is *released* (only inside a fenced transition,
or at shutdown); a request whose run is over is *notified and minimised*.
"""

from app.services.execution.completion import completion_payload, email_targets
from app.services.execution.engine import Engine
from app.services.execution.lease import LeaseLost, backoff, new_worker_id
from app.services.execution.runner import TaskCounts
from app.services.execution.worker import Worker

__all__ = [
    "Engine",
    "LeaseLost",
    "TaskCounts",
    "Worker",
    "backoff",
    "completion_payload",
    "email_targets",
    "new_worker_id",
]
