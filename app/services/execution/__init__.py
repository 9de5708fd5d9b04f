"""Execution: the durable queue, the workers, and what they do with a claimed request.

- :mod:`.lease`: claim, heartbeat, fence, release (one fenced ``transition`` per write);
  retry backoff.
- :mod:`.runner`: resolve the subject once, run the tasks of its plan, settle the request.
- :mod:`.completion`: a finished request's confirmations, then its minimisation.
- :mod:`.sweeps`: deadlines, expiries of requests from e-mail, deferred work.
- :mod:`.engine`: one worker's executor, wired from the above; :mod:`.worker`: its loop.
"""

from app.services.execution.completion import completion_payload, email_target
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
    "email_target",
    "new_worker_id",
]
