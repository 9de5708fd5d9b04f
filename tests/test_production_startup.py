"""Production unless asked otherwise, and no start on unsafe settings (issue 14, items 7-8).

Each test starts ``soundops-deletion serve`` as a deployment would, in a process of its
own with an environment of its own: a refused start exits 2 before listening, with one
line naming what is wrong; an accepted one serves ``/healthz``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.serve_process import PRODUCTION, start
from tests.serve_process import clean_env as _env
from testsupport.seed import FERNET_KEY

DEV_JWT_SECRET = "development-only-jwt-secret-not-for-production"  # public, in the source
NO_STORES = {"DELETION_ABSENT_STORES": "postgres,mongodb,s3,meta_graph"}

pytestmark = pytest.mark.slow


def _dev_token_answer(base: str) -> int:
    now = int(time.time())
    token = jwt.encode(
        {
            "sub": "stranger",
            "scope": "deletions:admin",
            "aud": "soundops-deletion",
            "iat": now,
            "exp": now + 300,
        },
        DEV_JWT_SECRET,
        algorithm="HS256",
    )
    response = httpx.get(
        f"{base}/v1/deletion-requests", headers={"Authorization": f"Bearer {token}"}
    )
    return response.status_code


def test_an_unset_environment_never_accepts_the_public_development_secret(
    tmp_path: Path,
) -> None:
    """With DELETION_ENVIRONMENT unset, nothing signed with the development secret from
    the source gets in: the service is production and will not start without secrets."""
    started = start(tmp_path, _env(tmp_path), probe=_dev_token_answer)
    assert started.exit_code is not None, (
        f"started in development by default; the development secret got {started.probe}"
    )
    assert started.exit_code == 2, started.output
    assert "DELETION_PUBLIC_BASE_URL is required in production" in started.output
    assert "Traceback" not in started.output

    # Real secrets, unset environment: production, and the public secret is refused.
    started = start(tmp_path, _env(tmp_path, **PRODUCTION, **NO_STORES), probe=_dev_token_answer)
    assert started.exit_code is None, started.output
    assert started.probe == 401


def test_the_development_secret_is_a_placeholder_in_production(tmp_path: Path) -> None:
    env = _env(tmp_path, **{**PRODUCTION, **NO_STORES, "DELETION_JWT_SECRET": DEV_JWT_SECRET})
    started = start(tmp_path, env, probe=_dev_token_answer)
    assert started.exit_code == 2, f"started; the development secret got {started.probe}"
    assert "DELETION_JWT_SECRET is missing or a placeholder" in started.output
    assert DEV_JWT_SECRET not in started.output


def test_production_does_not_start_without_its_public_base_url(tmp_path: Path) -> None:
    env = _env(tmp_path, **PRODUCTION, **NO_STORES)
    del env["DELETION_PUBLIC_BASE_URL"]
    started = start(tmp_path, env)
    assert started.exit_code == 2, "started, handing out http://localhost:8000 status links"
    assert "DELETION_PUBLIC_BASE_URL is required in production" in started.output


def test_production_does_not_start_without_its_tracking_database(tmp_path: Path) -> None:
    """The image's old default (production on ./deletion.db inside the container) is gone:
    unset, the service names the variable and leaves no database file behind."""
    env = _env(tmp_path, **PRODUCTION, **NO_STORES)
    del env["DELETION_DATABASE_URL"]
    started = start(tmp_path, env)
    assert started.exit_code == 2, "started on a SQLite file that dies with the container"
    assert "DELETION_DATABASE_URL is required in production" in started.output
    assert "Traceback" not in started.output
    assert not (tmp_path / "deletion.db").exists()


def test_production_does_not_start_with_a_plain_text_mailbox(tmp_path: Path) -> None:
    plain = "imap://privacy:mailbox-password@127.0.0.1:1143/INBOX?tls=none"
    started = start(tmp_path, _env(tmp_path, **PRODUCTION, **NO_STORES, DELETION_IMAP_URL=plain))
    assert started.exit_code == 2, "started with a mailbox password sent in clear"
    assert "DELETION_IMAP_URL asks for a plain-text connection" in started.output
    assert "mailbox-password" not in started.output


def test_development_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    env = _env(tmp_path, DELETION_ENVIRONMENT="development")
    for host in ("0.0.0.0", "::"):
        started = start(tmp_path, env, "--host", host)
        assert started.exit_code == 2, f"development listened on {host} with public secrets"
        assert f"Refusing to listen on {host} in development" in started.output
    # Test deployments (real secrets) may listen anywhere.
    env = _env(tmp_path, **PRODUCTION, DELETION_ENVIRONMENT="test")
    assert start(tmp_path, env, "--host", "0.0.0.0").exit_code is None


@pytest.fixture
def live_stores(
    fresh_pg_database: Any, soundops_template_database: str, s3_endpoint_url: str
) -> dict[str, str]:
    """A real SoundOps database and moto S3, with the Meta step's key: every store of
    the plans except MongoDB."""
    database = fresh_pg_database(template=soundops_template_database, prefix="soundops")
    return {
        "DELETION_TARGET_POSTGRES_URL": database.url,
        "DELETION_S3_ENDPOINT_URL": s3_endpoint_url,
        "DELETION_TOKEN_ENCRYPTION_KEY": FERNET_KEY.decode(),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def _ready_checks(base: str) -> dict[str, str]:
    """The stores' readiness (``/readyz`` checks only the tracking DB and the worker)."""
    checks: dict[str, str] = httpx.get(f"{base}/readyz/stores", timeout=10).json()["checks"]
    return checks


def test_production_names_a_plan_store_that_is_not_configured(
    tmp_path: Path, live_stores: dict[str, str]
) -> None:
    env = _env(tmp_path, **PRODUCTION, **live_stores)
    started = start(tmp_path, env)
    assert started.exit_code == 2, "started without MongoDB; its tasks would be 'skipped'"
    assert "Cannot start: not configured: mongodb (" in started.output
    assert "DELETION_ABSENT_STORES" in started.output
    assert "Traceback" not in started.output

    # Declared absent: it starts, and every other store is there.
    started = start(tmp_path, {**env, "DELETION_ABSENT_STORES": "mongodb"}, probe=_ready_checks)
    assert started.exit_code is None, started.output
    assert started.probe["postgres"] == "ok" and "mongodb" not in started.probe

    # The Meta step without its key counts as not configured.
    without_key = {k: v for k, v in env.items() if k != "DELETION_TOKEN_ENCRYPTION_KEY"}
    started = start(tmp_path, {**without_key, "DELETION_ABSENT_STORES": "mongodb"})
    assert started.exit_code == 2
    assert "not configured: meta_graph (" in started.output


def _without_s3(env: dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in env.items()
        if k not in ("DELETION_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }


def test_s3_counts_as_configured_when_botocore_finds_credentials(
    tmp_path: Path, live_stores: dict[str, str]
) -> None:
    """No endpoint, no key variables: S3 is what botocore's own chain finds."""
    env = _without_s3(_env(tmp_path, **PRODUCTION, **live_stores, DELETION_ABSENT_STORES="mongodb"))
    started = start(tmp_path, env)
    assert started.exit_code == 2, "started with no S3 credentials anywhere"
    assert "not configured: s3 (" in started.output

    # A shared credentials file (as an operator's profile or a mounted secret).
    credentials = tmp_path / "aws-credentials"
    credentials.write_text("[default]\naws_access_key_id = AKIATEST\naws_secret_access_key = x\n")
    started = start(tmp_path, {**env, "AWS_SHARED_CREDENTIALS_FILE": str(credentials)})
    assert started.exit_code is None, started.output

    # Web identity (Kubernetes service accounts): a role and a token file.
    token = tmp_path / "web-identity-token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    web_identity = {
        **env,
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/soundops-deletion",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
    }
    assert start(tmp_path, web_identity).exit_code is None

    # Declared absent, S3 is not looked for at all.
    started = start(tmp_path, {**env, "DELETION_ABSENT_STORES": "mongodb,s3"})
    assert started.exit_code is None, started.output
