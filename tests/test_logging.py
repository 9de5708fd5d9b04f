"""The access log of `soundops-deletion serve` never shows a confirmation link's token or a
status page's code (secrets in the path), nor the subject a list is filtered by (personal
data in the query)."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from tests.cli.test_commands import served  # noqa: F401  (the fixture: `serve` in a fresh folder)


def test_link_tokens_and_status_codes_are_masked_in_the_access_log(
    served: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    base, _ = served
    token, code = secrets.token_urlsafe(32), secrets.token_hex(16)
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get(f"/deletion-confirm/{token}").status_code == 404
        assert client.post(f"/deletion-confirm/{token}").status_code == 404
        assert client.get(f"/deletion-status/{code}?x=1").status_code == 404
        assert client.get("/healthz").status_code == 200
    log = (tmp_path / "serve.log").read_text()
    assert '"GET /healthz HTTP/1.1" 200' in log  # the access log is on
    assert '"GET /deletion-confirm/*** HTTP/1.1" 404' in log
    assert '"POST /deletion-confirm/*** HTTP/1.1" 404' in log
    assert '"GET /deletion-status/***?x=1 HTTP/1.1" 404' in log
    assert token not in log and code not in log


def test_the_subject_filter_of_the_list_is_masked_in_the_access_log(
    served: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    base, _ = served
    with httpx.Client(base_url=base, timeout=10) as client:
        for query in (
            "subject=owner_email%3Dprivate.person%40example.com&limit=5",
            "limit=5&subject=site_name=private-band",
            "SUBJECT=owner_email=private.person@example.com",
        ):
            # Unauthenticated: 401, and logged all the same.
            assert client.get(f"/v1/deletion-requests?{query}").status_code == 401
    log = (tmp_path / "serve.log").read_text()
    assert '"GET /v1/deletion-requests?subject=***&limit=5 HTTP/1.1" 401' in log
    assert '"GET /v1/deletion-requests?limit=5&subject=*** HTTP/1.1" 401' in log
    assert '"GET /v1/deletion-requests?SUBJECT=*** HTTP/1.1" 401' in log
    assert "private" not in log
