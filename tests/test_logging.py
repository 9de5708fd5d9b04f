"""The access log of `soundops-deletion serve` never shows a confirmation link's token or a
status page's code (secrets in the path), nor the subject a list is filtered by (personal
data in the query)."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import httpx
import pytest
import structlog

from app.logging import configure_logging
from app.settings import Environment, Settings
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


@pytest.mark.parametrize("source", ["stdlib", "structlog"])
def test_an_exception_is_logged_by_type_and_place_never_by_its_text(
    source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """uvicorn logs an application's exception with ``exc_info``; the line names its type
    and frames, not its message (which can hold what the code was handling)."""
    configure_logging(Settings.model_construct(environment=Environment.production))
    capsys.readouterr()
    try:
        raise ValueError("private.person@example.com is not a tenant of private-band")
    except ValueError as exc:
        if source == "stdlib":
            logging.getLogger("uvicorn.error").error("Exception in ASGI application", exc_info=exc)
        else:
            structlog.get_logger().error("request_failed", exc_info=True)
    err = capsys.readouterr().err
    assert "private" not in err and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["error_type"] == "ValueError"
    assert any("test_an_exception_is_logged_by_type_and_place" in f for f in record["frames"])
    assert "private" not in line and "exc_info" not in record
