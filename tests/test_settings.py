"""Settings: the contract's variables, placeholders refused outside development."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from app.settings import Environment, Settings, normalise_db_url, parse_duration

GOOD_SECRET = "a-real-secret-of-enough-length"
KEY = "dGVzdC1yZWNlaXB0LXNpZ25pbmcta2V5LTMyLWJ5dGU="
BASE = "https://privacy.soundops.example"
TRACKING = "postgresql://deletion@db.internal:5432/deletion"


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DELETION_DATABASE_URL", "DELETION_ENVIRONMENT", "DELETION_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert Settings.model_fields["environment"].default is Environment.production
    settings = Settings(environment="development")
    assert settings.absent_stores == frozenset()
    assert settings.forwarded_allow_ips == ()
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
    monkeypatch.setenv("DELETION_ENVIRONMENT", "development")
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
            database_url=TRACKING,
            public_base_url=BASE,
            jwt_secret=placeholder,
            hash_key=GOOD_SECRET,
            receipt_signing_key=KEY,
        )
    assert "DELETION_JWT_SECRET" in str(info.value)
    assert placeholder not in str(info.value) or placeholder == ""


def test_missing_hash_key_is_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="DELETION_HASH_KEY"):
        Settings(
            environment="production",
            database_url=TRACKING,
            public_base_url=BASE,
            jwt_secret=GOOD_SECRET,
            receipt_signing_key=KEY,
        )


def test_production_with_real_secrets_or_jwks_is_fine() -> None:
    Settings(
        environment="production",
        database_url=TRACKING,
        public_base_url=BASE,
        jwt_secret=GOOD_SECRET,
        hash_key=GOOD_SECRET,
        receipt_signing_key=KEY,
    )
    Settings(
        environment="production",
        database_url=TRACKING,
        public_base_url=BASE,
        jwt_jwks_url="https://auth.example/jwks",
        hash_key=GOOD_SECRET,
        receipt_signing_key=KEY,
    )


def test_missing_receipt_key_is_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="DELETION_RECEIPT_SIGNING_KEY"):
        Settings(
            environment="production",
            database_url=TRACKING,
            public_base_url=BASE,
            jwt_secret=GOOD_SECRET,
            hash_key=GOOD_SECRET,
        )


def test_secret_and_jwks_together_are_refused() -> None:
    with pytest.raises(ValidationError, match="not both"):
        Settings(
            environment="development",
            jwt_secret=GOOD_SECRET,
            jwt_jwks_url="https://auth.example/jwks",
        )


def test_unsupported_algorithm_is_refused() -> None:
    with pytest.raises(ValidationError, match="unsupported"):
        Settings(environment="development", jwt_algorithms="none")


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


# --- production unless asked otherwise (issue 14, item 7) -----------------------------

DEV_JWT_SECRET = "development-only-jwt-secret-not-for-production"  # the public constants
DEV_HASH_KEY = "development-only-hash-key"
DEV_RECEIPT_KEY = "TQnmDqz8Y1ZJ9T4I5b3S16Wzf8uyz40bdAA3eDL3fuk="  # base64(sha256(dev seed))


def _production(**values: Any) -> Settings:
    base: dict[str, Any] = {
        "environment": "production",
        "database_url": TRACKING,
        "public_base_url": BASE,
        "jwt_secret": GOOD_SECRET,
        "hash_key": GOOD_SECRET,
        "receipt_signing_key": KEY,
    }
    return Settings(**{**base, **values})


def test_an_unset_environment_is_production(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DELETION_ENVIRONMENT", "DELETION_JWT_SECRET", "DELETION_HASH_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="required"):
        Settings()  # no development secrets without asking for development
    settings = Settings(
        database_url=TRACKING,
        public_base_url=BASE,
        jwt_secret=GOOD_SECRET,
        hash_key=GOOD_SECRET,
        receipt_signing_key=KEY,
    )
    assert settings.environment is Environment.production


def test_the_development_receipt_key_constant_is_what_the_test_names() -> None:
    import base64
    import hashlib

    seed = hashlib.sha256(b"development-only-receipt-signing-key").digest()
    assert base64.b64encode(seed).decode() == DEV_RECEIPT_KEY


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jwt_secret", DEV_JWT_SECRET),
        ("hash_key", DEV_HASH_KEY),
        ("receipt_signing_key", DEV_RECEIPT_KEY),
    ],
)
@pytest.mark.parametrize("environment", ["production", "test"])
def test_the_development_constants_are_placeholders_outside_development(
    name: str, value: str, environment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        _production(environment=environment, **{name: value})
    assert f"DELETION_{name.upper()}" in str(info.value)
    assert value not in str(info.value)


def test_production_needs_its_own_https_public_base_url() -> None:
    with pytest.raises(ValidationError, match="DELETION_PUBLIC_BASE_URL is required"):
        Settings(
            environment="production",
            database_url=TRACKING,
            jwt_secret=GOOD_SECRET,
            hash_key=GOOD_SECRET,
            receipt_signing_key=KEY,
        )
    with pytest.raises(ValidationError, match="https://"):
        _production(public_base_url="http://localhost:8000")
    assert _production().public_base_url == BASE
    # Tests and development keep the default.
    assert Settings(environment="development").public_base_url == "http://localhost:8000"


def test_production_needs_its_tracking_database_named() -> None:
    """No silent SQLite file in the working directory of a production container: the
    evidence of every deletion would go with the container (issue 17, item 5)."""
    values: dict[str, Any] = {
        "environment": "production",
        "public_base_url": BASE,
        "jwt_secret": GOOD_SECRET,
    }
    values |= {"hash_key": GOOD_SECRET, "receipt_signing_key": KEY}
    with pytest.raises(ValidationError, match="DELETION_DATABASE_URL is required in production"):
        Settings(**values)
    # Named, it may be PostgreSQL or a SQLite file on a volume that outlives the process.
    assert _production().database_url == "postgresql+asyncpg://deletion@db.internal:5432/deletion"
    on_volume = _production(database_url="sqlite:////var/lib/soundops-deletion/deletion.db")
    assert on_volume.is_sqlite
    # Development and test deployments keep the contract's default.
    assert Settings(**{**values, "environment": "test"}).database_url.startswith("sqlite")


IMAP = "imap://privacy:pw@mail.example:143/INBOX"


def test_production_refuses_a_plain_text_mailbox() -> None:
    with pytest.raises(ValidationError, match="plain-text") as info:
        _production(imap_url=IMAP + "?tls=none")
    assert ":pw@" not in str(info.value) and KEY[-8:] not in str(info.value)
    # imap:// means STARTTLS (required); imaps:// is TLS from the first byte.
    assert _production(imap_url=IMAP).imap_url is not None
    assert _production(imap_url="imaps://privacy:pw@mail.example/INBOX").imap_url is not None
    # A local test server without TLS, outside production only.
    assert _production(environment="test", imap_url=IMAP + "?tls=none").imap_url is not None
    for bad in (IMAP + "?tls=maybe", IMAP + "?mode=plain", "imaps://u:p@h/INBOX?tls=none"):
        with pytest.raises(ValidationError, match="DELETION_IMAP_URL"):
            _production(imap_url=bad)


def test_absent_stores_are_a_checked_list() -> None:
    settings = Settings(environment="development", absent_stores=" MongoDB, s3 ,")
    assert settings.absent_stores == {"mongodb", "s3"}
    with pytest.raises(ValidationError, match="'postgres', 'mongodb', 's3' or 'meta_graph'"):
        Settings(environment="development", absent_stores="mongodb,redis")
    # Configured and declared absent: which one was meant cannot be guessed.
    with pytest.raises(ValidationError, match="names mongodb, which this deployment configures"):
        Settings(environment="development", absent_stores="mongodb", mongodb_url="mongodb://h/")
    with pytest.raises(ValidationError, match="meta_graph"):
        Settings(
            environment="development",
            absent_stores="meta_graph",
            token_encryption_key="a" * 43 + "=",
        )


def test_forwarded_allow_ips_take_addresses_and_ranges() -> None:
    settings = Settings(
        environment="development", forwarded_allow_ips="10.0.0.7, 192.168.0.0/16,::1"
    )
    assert [str(n) for n in settings.forwarded_allow_ips] == [
        "10.0.0.7/32",
        "192.168.0.0/16",
        "::1/128",
    ]
    with pytest.raises(ValidationError, match="CIDR"):
        Settings(environment="development", forwarded_allow_ips="proxy.internal")


@pytest.mark.parametrize("address", ["", "ops", "ops@localhost", "ops team@example.com"])
def test_an_operator_email_that_is_not_one_address_is_refused(address: str) -> None:
    with pytest.raises(ValidationError, match="DELETION_OPERATOR_EMAIL"):
        Settings(environment="development", smtp_url="smtp://127.0.0.1:25", operator_email=address)


def test_an_operator_email_without_a_mail_server_is_refused() -> None:
    with pytest.raises(ValidationError, match="DELETION_SMTP_URL"):
        Settings(environment="development", operator_email="dpo@soundops.example")
    fine = Settings(
        environment="development", smtp_url="smtp://127.0.0.1:25", operator_email="dpo@x.example"
    )
    assert fine.operator_email == "dpo@x.example"


def test_retention_settings_default_to_the_contract_and_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.retention_status import RetentionStore

    defaults = Settings(environment="development")
    assert defaults.instagram_retention == timedelta(days=30)
    assert defaults.retention_sweep == frozenset()
    assert defaults.retention_check_seconds == 3600
    monkeypatch.setenv("DELETION_INSTAGRAM_RETENTION", "14d")
    monkeypatch.setenv("DELETION_RETENTION_SWEEP", " MongoDB , s3 ")
    monkeypatch.setenv("DELETION_RETENTION_CHECK_SECONDS", "600")
    read = Settings(environment="development")
    assert read.instagram_retention == timedelta(days=14)
    assert read.retention_sweep == {RetentionStore.mongodb, RetentionStore.s3}
    assert read.retention_check_seconds == 600


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DELETION_RETENTION_SWEEP", "mongodb,postgres", "unknown store(s) postgres"),
        ("DELETION_RETENTION_SWEEP", "s3,minio,mongo", "unknown store(s) minio, mongo"),
        # A bare number is seconds: 30 would sweep all but the last half-minute.
        ("DELETION_INSTAGRAM_RETENTION", "30", "whole number of days, at least 1d"),
        ("DELETION_INSTAGRAM_RETENTION", "36h", "whole number of days"),
        ("DELETION_INSTAGRAM_RETENTION", "0d", "at least 1d"),
        ("DELETION_INSTAGRAM_RETENTION", "thirty days", "expected a duration"),
        ("DELETION_RETENTION_CHECK_SECONDS", "0", "greater than or equal to 1"),
    ],
)
def test_bad_retention_settings_are_refused_clearly(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings(environment="development")
