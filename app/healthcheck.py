"""``python -m app.healthcheck``: the container image's HEALTHCHECK (standard library only,
no settings loaded, nothing in the image needs curl).

Exit 0 when this container's process answers ``/healthz`` with 200, 1 otherwise. The
port is ``DELETION_METRICS_PORT`` when set (the ``worker`` and ``mailbox poll``
processes serve ``/healthz`` there), else ``DELETION_PORT`` (``serve``; default 8000).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def port() -> int:
    return int(os.environ.get("DELETION_METRICS_PORT") or os.environ.get("DELETION_PORT") or 8000)


def healthy(timeout: float = 4.0) -> bool:
    url = f"http://127.0.0.1:{port()}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


if __name__ == "__main__":
    sys.exit(0 if healthy() else 1)
