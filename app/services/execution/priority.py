"""Short work beside long work: batch yield points.

One worker process runs a long request (an account with hundreds of thousands of rows,
documents and objects) next to short ones (an ``instagram_disconnect``: a few updates and
a few documents) on one event loop and the same stores. Without a rule, the short request
shares the loop, the store's CPU and the worker's time with every batch of the long one,
and waits seconds for what takes a fraction of a second alone.

The rule: while a short request's tasks run in this process, a long request's purger
waits after each committed batch (the point where it reports progress, see
:class:`app.purgers.base.Progress`) until the short ones are done, for at most
:data:`PATIENCE` seconds per batch, so a steady stream of short requests slows a long one
down but never stops it. Nothing is cancelled or interrupted: a batch under way finishes,
and what it deleted is recorded first. Other worker processes are not held up (each has its
own loop; the claim order is the queue's business).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

from app.models import RequestKind
from app.repository import SHORT_KINDS

PATIENCE = 2.0  # seconds a long request's batch waits for short ones at most


class ShortFirst:
    """Counts the short requests whose tasks run in this process; long ones yield to them."""

    def __init__(self, patience: float = PATIENCE) -> None:
        self.patience = patience
        self._short = 0
        self._clear = asyncio.Event()
        self._clear.set()

    @contextlib.contextmanager
    def running(self, kind: RequestKind) -> Iterator[None]:
        """Around a task of a request of ``kind``: counted while it runs when it is short."""
        if kind not in SHORT_KINDS:
            yield
            return
        self._short += 1
        self._clear.clear()
        try:
            yield
        finally:
            self._short -= 1
            if not self._short:
                self._clear.set()

    def pause_for(self, kind: RequestKind) -> Callable[[], Awaitable[None]] | None:
        """What a batch of a request of ``kind`` awaits once it is recorded; None (never
        wait) for a short request."""
        return None if kind in SHORT_KINDS else self.yield_to_short

    async def yield_to_short(self) -> None:
        if self._short:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.patience):
                    await self._clear.wait()
