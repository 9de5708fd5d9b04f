"""Settings: the contract's variables, placeholders refused outside development."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from app.settings import Settings, normalise_db_url, parse_duration

GOOD_SECRET = "a-real-secret-of-enough-length"
KEY = "dGVzdC1yZWNlaXB0LXNpZ25pbmcta2V5LTMyLWJ5dGU="


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DELETION_DATABASE_URL", "DELETION_ENVIRONMENT", "DELETION_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.database_url == "sqlite+aiosqlite:///./deletion.db"
    assert settings.mongodb_database == "soundops"
    assert settings.s3_region == "us-east-1"
    assert settings.meta_graph_url == "https://graph.facebook.com"
    assert settings.instagram_graph_url == "https://graph.instagram.com"
    assert settings.meta_graph_version == "v25.0"
    assert settings.jwt_audience == "soundops-deletion"
    assert settings.public_base_url == "http://localhost:8000"
    assert settings.run_worker is True
    assert settings.imap_done_folder == "Processed"
    assert settings.email_confirm_ttl == timedelta(days=7)
    assert settings.effective_jwt_algorithms == ["HS256"]


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELETION_TARGET_POSTGRES_URL", "postgresql://u@h:5432/soundops")
    monkeypatch.setenv("DELETION_EMAIL_CONFIRM_TTL", "36h")
    monkeypatch.setenv("DELETION_RUN_WORKER", "false")
    monkeypatch.setenv("DELETION_PUBLIC_BASE_URL", "https://privacy.soundops.example/")
    settings = Settings()
    assert settings.target_postgres_url == "postgresql+asyncpg://u@h:5432/soundops"
    assert settings.email_confirm_ttl == timedelta(hours=36)
    assert settings.run_worker is False
    assert settings.public_base_url == "https://privacy.soundops.example"


@pytest.mark.parametrize("placeholder", ["changeme", "secret", "", "short"])
def test_placeholder_secrets_are_refused_outside_development(placeholder: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(
            environment="production",
            jwt_secret=placeholder,
            hash_key=GOOD_SECRET,
            receipt_signing_key=KEY,
        )
    assert "DELETION_JWT_SECRET" in str(info.value)
    assert placeholder not in str(info.value) or placeholder == ""


def test_missing_hash_key_is_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="DELETION_HASH_KEY"):
        Settings(environment="production", jwt_secret=GOOD_SECRET, receipt_signing_key=KEY)


def test_production_with_real_secrets_or_jwks_is_fine() -> None:
    Settings(
        environment="production",
        jwt_secret=GOOD_SECRET,
        hash_key=GOOD_SECRET,
        receipt_signing_key=KEY,
    )
    Settings(
        environment="production",
        jwt_jwks_url="https://auth.example/jwks",
        hash_key=GOOD_SECRET,
        receipt_signing_key=KEY,
    )


def test_missing_receipt_key_is_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="DELETION_RECEIPT_SIGNING_KEY"):
        Settings(environment="production", jwt_secret=GOOD_SECRET, hash_key=GOOD_SECRET)


def test_secret_and_jwks_together_are_refused() -> None:
    with pytest.raises(ValidationError, match="not both"):
        Settings(jwt_secret=GOOD_SECRET, jwt_jwks_url="https://auth.example/jwks")


def test_unsupported_algorithm_is_refused() -> None:
    with pytest.raises(ValidationError, match="unsupported"):
        Settings(jwt_algorithms="none")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7d", timedelta(days=7)), ("12h", timedelta(hours=12)), ("90", timedelta(seconds=90))],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_bad_duration() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")


def test_db_urls_are_normalised() -> None:
    assert normalise_db_url("postgres://a@b/c") == "postgresql+asyncpg://a@b/c"
    assert normalise_db_url("postgresql+asyncpg://a@b/c") == "postgresql+asyncpg://a@b/c"
    assert normalise_db_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
