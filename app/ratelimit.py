"""A small in-process rate limit for the public pages (per client address), and whose
address that is.

Behind a reverse proxy every visitor arrives from the proxy's address. Only a proxy
named in ``DELETION_FORWARDED_ALLOW_IPS`` is believed about the client: its
``X-Forwarded-For`` chain is read from the right (each proxy appends the address it
saw) and the first address that is not a trusted proxy is the client. From anyone
else the header is ignored, so a visitor cannot pick a fresh key for every request.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Iterable, Sequence

from app.settings import IpNetwork


def _trusted(address: str, proxies: Sequence[IpNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(peer: str, forwarded_for: Iterable[str], proxies: Sequence[IpNetwork]) -> str:
    """The client's address: ``peer`` (the socket's), unless ``peer`` is a trusted proxy;
    then the right-most address of the ``X-Forwarded-For`` headers that is not one."""
    if not proxies or not _trusted(peer, proxies):
        return peer
    chain = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    chain = [hop for hop in chain if hop]
    for hop in reversed(chain):
        if not _trusted(hop, proxies):
            return hop
    # Every hop is a trusted proxy: the left-most is as far as anyone can tell.
    return chain[0] if chain else peer


class RateLimiter:
    """At most ``limit`` hits per ``window`` seconds per key; memory bounded by ``max_keys``."""

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self._max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self._max_keys:
                self._prune(now)
            hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    def _prune(self, now: float) -> None:
        stale = [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]
        for key in stale:
            del self._hits[key]
        if len(self._hits) >= self._max_keys:  # all busy: forget the oldest half
            for key in list(self._hits)[: self._max_keys // 2]:
                del self._hits[key]
