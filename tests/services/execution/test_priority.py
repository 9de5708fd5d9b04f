"""Batch yield points: a long request's batches wait while a short one runs here."""

from __future__ import annotations

import asyncio

from app.models import RequestKind
from app.services.execution.priority import ShortFirst


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_long_requests_batch_waits_until_the_short_request_is_done() -> None:
    gate = ShortFirst(patience=3600)
    pause = gate.pause_for(RequestKind.account)
    assert pause is not None
    with gate.running(RequestKind.instagram_disconnect):
        waiting = asyncio.ensure_future(pause())
        await _settle()
        assert not waiting.done()
    await asyncio.wait_for(waiting, timeout=10)


async def test_without_short_work_a_batch_does_not_wait() -> None:
    gate = ShortFirst(patience=3600)
    pause = gate.pause_for(RequestKind.meta_data)
    assert pause is not None
    with gate.running(RequestKind.account):  # long work is not waited for
        await asyncio.wait_for(pause(), timeout=10)


async def test_a_steady_stream_of_short_work_never_stops_a_long_request() -> None:
    gate = ShortFirst(patience=0.01)
    pause = gate.pause_for(RequestKind.account)
    assert pause is not None
    with gate.running(RequestKind.instagram_disconnect):
        await asyncio.wait_for(pause(), timeout=10)  # patience ran out; still short work


async def test_a_short_request_never_waits() -> None:
    gate = ShortFirst(patience=3600)
    assert gate.pause_for(RequestKind.instagram_disconnect) is None


async def test_the_count_holds_when_short_requests_overlap() -> None:
    gate = ShortFirst(patience=3600)
    pause = gate.pause_for(RequestKind.account)
    assert pause is not None
    with gate.running(RequestKind.instagram_disconnect):
        with gate.running(RequestKind.instagram_disconnect):
            pass
        waiting = asyncio.ensure_future(pause())
        await _settle()
        assert not waiting.done()  # one is still running
    await asyncio.wait_for(waiting, timeout=10)
