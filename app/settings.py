"""Settings, one class per concern, all read from ``DELETION_*`` environment variables.

Every variable of the contract's table is parsed here, including those whose
feature arrives later, so that a deployment's configuration is validated at
start-up in one place.

Each concern (the tracking database, the target stores, Meta, REST authentication, the
service's own identity, notifications, the mailbox, intake, receipts, the engine and its
queue) is a ``pydantic-settings`` class of its own, and :class:`Settings` composes them
by inheritance. Why mixins rather than nested sub-models (``settings.meta.app_secret``):
nested models would rename every variable (``DELETION_META__APP_SECRET``) or need a
prefix per model, and would change every ``settings.<field>`` read across the code;
inheritance keeps each variable's name, each validation and the flat access, while a
function that needs one concern can still say so in its signature (``MetaSettings``).
Field validators live with their concern; the checks that span concerns, and the order
in which all checks run (which error a bad configuration reports first), are in
:meth:`Settings._check`.

Switches of tests only are not settings of the service: they are in ``testsupport``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.imap_url import ImapLocation
from app.purgers.base import PurgerName
from app.retention_status import RetentionStore

# Fixed secrets of development, public in this source: the service and the `token` command
# share them so that a fresh checkout works. They are placeholders everywhere else.
DEV_JWT_SECRET = "development-only-jwt-secret-not-for-production"  # noqa: S105
DEV_HASH_KEY = b"development-only-hash-key"
DEV_RECEIPT_SEED = hashlib.sha256(b"development-only-receipt-signing-key").digest()

PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "changethis",
        "secret",
        "dev",
        "development",
        "test",
        "xxx",
        DEV_JWT_SECRET,
        DEV_HASH_KEY.decode(),
    }
)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")

_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """Parse ``7d``, ``12h``, ``30m``, ``45s``, a bare number of seconds, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError("expected a duration such as 7d, 12h, 30m or a number of seconds")
    amount, unit = match.groups()
    return timedelta(seconds=int(amount) * _DURATION_UNITS[unit])


def normalise_db_url(url: str) -> str:
    """Accept ``postgresql://`` / ``postgres://`` and use the asyncpg driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class EnvironmentSettings(BaseSettings):
    """The base of every concern: the variables' prefix and which kind of deployment."""

    model_config = SettingsConfigDict(
        env_prefix="DELETION_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,  # an error must never quote a secret
    )

    # Production unless set: development (fixed, public secrets; stores may be missing)
    # must be asked for.
    environment: Environment = Environment.production

    def development_only(self, value: T, setting: str) -> T:
        """A development constant, or an error naming the setting anywhere else."""
        if self.environment is not Environment.development:
            raise ValueError(f"{setting} is required outside development")
        return value


class DatabaseSettings(EnvironmentSettings):
    """The service's own tracking database."""

    database_url: str = "sqlite+aiosqlite:///./deletion.db"

    @field_validator("database_url", mode="after")
    @classmethod
    def _db_url(cls, value: str) -> str:
        return normalise_db_url(value) if value else value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


class StoreSettings(EnvironmentSettings):
    """The target stores that the purgers delete from."""

    target_postgres_url: str | None = None
    mongodb_url: str | None = None
    mongodb_database: str = "soundops"
    # Documents per delete batch. Below FerretDB's 32,766-match ceiling (SQLite backend; 65,535
    # on PostgreSQL), so valid on both. On FerretDB's SQLite backend every batch costs a scan
    # of the collection, so fewer, larger batches are much faster
    # (bench/large_purge.py: 100,000 documents in 46 s at 30,000, 78 s at 10,000).
    mongodb_batch_size: int = Field(default=30_000, ge=100, le=32_000)
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    # S3 is used when an endpoint or AWS credentials are configured; this forces it on or off.
    s3_enabled_setting: bool | None = Field(default=None, alias="DELETION_S3_ENABLED")
    # Purgers deliberately not part of this deployment: their tasks are skipped, saying so.
    absent_stores: Annotated[frozenset[PurgerName], NoDecode] = frozenset()

    @field_validator("target_postgres_url", mode="after")
    @classmethod
    def _target_url(cls, value: str | None) -> str | None:
        return normalise_db_url(value) if value else value

    @field_validator("absent_stores", mode="before")
    @classmethod
    def _split_stores(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value


class MetaSettings(EnvironmentSettings):
    """Meta: the apps' secrets, the Graph API, the stored page tokens' key."""

    meta_app_secret: SecretStr | None = None
    instagram_app_secret: SecretStr | None = None
    meta_graph_url: str = "https://graph.facebook.com"
    instagram_graph_url: str = "https://graph.instagram.com"
    meta_graph_version: str = "v25.0"
    token_encryption_key: SecretStr | None = None
    # Oldest issued_at a Meta callback may carry (seconds; 0: no limit).
    meta_max_age_seconds: int = Field(default=604800, ge=0)


class AuthSettings(EnvironmentSettings):
    """REST authentication: bearer JWTs, from a shared secret or a JWKS."""

    jwt_secret: SecretStr | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=list)
    jwt_issuer: str | None = None
    jwt_audience: str = "soundops-deletion"
    jwks_cache_seconds: int = 300

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def _check_auth(self) -> None:
        allowed = {"HS256", "RS256", "ES256"}
        bad = [alg for alg in self.jwt_algorithms if alg not in allowed]
        if bad:
            raise ValueError(f"DELETION_JWT_ALGORITHMS: unsupported {bad}; use {sorted(allowed)}")
        if self.jwt_secret is not None and self.jwt_jwks_url:
            raise ValueError("set DELETION_JWT_SECRET or DELETION_JWT_JWKS_URL, not both")

    @property
    def effective_jwt_algorithms(self) -> list[str]:
        if self.jwt_algorithms:
            return self.jwt_algorithms
        return ["RS256", "ES256"] if self.jwt_jwks_url else ["HS256"]

    @property
    def effective_jwt_secret(self) -> str:
        """The HS256 secret of REST tokens; the fixed one only in development."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return self.development_only(DEV_JWT_SECRET, "DELETION_JWT_SECRET")


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class ServiceSettings(EnvironmentSettings):
    """The service itself: its public address, its subject-hash key, its data map; how its
    processes log and where ``worker`` and ``mailbox poll`` serve their metrics."""

    public_base_url: str = "http://localhost:8000"
    hash_key: SecretStr | None = None
    data_map: Path | None = None
    log_level: LogLevel = LogLevel.info
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("public_base_url", mode="after")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def effective_hash_key(self) -> bytes:
        """The HMAC key for subject hashes; the fixed one only in development."""
        if self.hash_key is not None:
            return self.hash_key.get_secret_value().encode()
        return self.development_only(DEV_HASH_KEY, "DELETION_HASH_KEY")


class NotificationSettings(EnvironmentSettings):
    """Notices: the signed webhook, and the outgoing mail (SMTP) of every e-mail sent."""

    notify_webhook_url: str | None = None
    notify_webhook_secret: SecretStr | None = None
    smtp_url: str | None = None
    mail_from: str = "privacy@soundops.example"
    # Where failed and overdue requests are mailed (``deletion.failed``/``.overdue``).
    operator_email: str | None = None

    def _check_notifications(self) -> None:
        if self.notify_webhook_url and self.notify_webhook_secret is None:
            raise ValueError("DELETION_NOTIFY_WEBHOOK_URL needs DELETION_NOTIFY_WEBHOOK_SECRET")
        if self.operator_email is not None:
            local, _, domain = self.operator_email.partition("@")
            if not local or "." not in domain or any(c.isspace() for c in self.operator_email):
                raise ValueError("DELETION_OPERATOR_EMAIL must be one e-mail address")
            if self.smtp_url is None:
                raise ValueError("DELETION_OPERATOR_EMAIL needs DELETION_SMTP_URL")


class MailboxSettings(EnvironmentSettings):
    """Requests by e-mail: the privacy@ mailbox, confirmation links, trusted authentication."""

    imap_url: SecretStr | None = None
    imap_done_folder: str = "Processed"
    imap_poll_seconds: float = Field(default=60.0, gt=0)
    email_confirm_ttl: timedelta = timedelta(days=7)
    email_authserv_id: str | None = None

    @field_validator("email_confirm_ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)

    def _check_mailbox(self) -> None:
        if self.imap_url is not None:
            where = ImapLocation.parse(self.imap_url.get_secret_value())  # ValueError says why
            if not where.encrypted and self.environment is Environment.production:
                raise ValueError(
                    "DELETION_IMAP_URL asks for a plain-text connection (tls=none): the "
                    "mailbox password would travel in clear; use imaps:// or imap:// "
                    "(STARTTLS) in production"
                )


class IntakeSettings(EnvironmentSettings):
    """Intake and deadlines: the legal deadline, the public status page, trusted proxies."""

    deadline_days: int = 30
    status_page_per_minute: int = Field(default=60, ge=1)
    # Proxies whose X-Forwarded-For is trusted (IPs or CIDRs); none unless set.
    forwarded_allow_ips: Annotated[tuple[IpNetwork, ...], NoDecode] = ()
    deadline_warn_days: float = Field(default=3, ge=0)
    deadline_check_seconds: float = Field(default=60, gt=0)

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        try:
            return tuple(ipaddress.ip_network(str(item), strict=False) for item in value)
        except ValueError as exc:
            raise ValueError("expected IP addresses or CIDR ranges, separated by commas") from exc


class ReceiptSettings(EnvironmentSettings):
    """Receipts: the Ed25519 key that signs them."""

    # Ed25519 seed (base64, 32 bytes) that signs receipts; required outside development.
    receipt_signing_key: SecretStr | None = None
    # How long backups of the SoundOps stores are kept: receipts and the status page give
    # ``completed_at`` + this many days as the date by which backup copies expire. Unset:
    # they say that backups are outside this service.
    backup_retention_days: int | None = Field(default=None, ge=1, le=3650)


class EngineSettings(EnvironmentSettings):
    """The execution engine and its durable queue."""

    run_worker: bool = True
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    lease_seconds: float = Field(default=60.0, ge=1)
    max_attempts: int = Field(default=8, ge=1)
    retry_base_seconds: float = Field(default=5.0, gt=0)
    retry_max_seconds: float = Field(default=3600.0, gt=0)
    purger_timeout_seconds: float = Field(default=900.0, gt=0)
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    # How long a disconnect keeps the encrypted tokens to revoke them at Meta: past it, from
    # the request's creation, they are destroyed anyway (the Meta step ends ``skipped``).
    revoke_deadline: timedelta = timedelta(hours=1)

    @field_validator("revoke_deadline", mode="before")
    @classmethod
    def _revoke_duration(cls, value: Any) -> timedelta:
        return parse_duration(value)


class RetentionSettings(EnvironmentSettings):
    """SoundOps' automatic deletion of Instagram data, as the worker enforces it."""

    # How long Instagram messages, comments and cached media live: a whole number of days,
    # at least one (an S3 lifecycle rule counts in days; a bare ``30`` would be 30 seconds
    # and would sweep almost everything, so anything shorter than a day is refused).
    instagram_retention: timedelta = timedelta(days=30)
    # Stores the worker sweeps itself even when their rule is in place.
    retention_sweep: Annotated[frozenset[RetentionStore], NoDecode] = frozenset()
    retention_check_seconds: float = Field(default=3600, ge=1)

    @field_validator("instagram_retention", mode="before")
    @classmethod
    def _retention_duration(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("instagram_retention", mode="after")
    @classmethod
    def _whole_days(cls, value: timedelta) -> timedelta:
        if value < timedelta(days=1) or value % timedelta(days=1):
            raise ValueError(
                "must be a whole number of days, at least 1d (such as 30d): an S3 lifecycle "
                "rule counts in days"
            )
        return value

    @field_validator("retention_sweep", mode="before")
    @classmethod
    def _sweep_stores(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
        known = {store.value for store in RetentionStore}
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(
                f"unknown store(s) {', '.join(unknown)}; the stores that can be swept are "
                f"{', '.join(sorted(known))}"
            )
        return names


# pydantic collects fields along the reversed MRO: the concerns are listed last-first so
# that the fields (and so the errors of a bad configuration) keep the order above.
class Settings(
    RetentionSettings,
    EngineSettings,
    ReceiptSettings,
    IntakeSettings,
    MailboxSettings,
    NotificationSettings,
    ServiceSettings,
    AuthSettings,
    MetaSettings,
    StoreSettings,
    DatabaseSettings,
):
    """All of the service's configuration: every concern above, with the checks that
    span several of them."""

    @model_validator(mode="after")
    def _check(self) -> Settings:
        self._check_auth()
        self._check_mailbox()
        self._check_notifications()
        self._check_absent_stores()
        if self.environment is Environment.production:
            self._check_production()
        if self.environment is not Environment.development:
            self._check_secrets()
        return self

    def _check_absent_stores(self) -> None:
        """A store is either configured or declared absent, never both: which one the
        operator meant cannot be guessed, and guessing wrong leaves data behind."""
        configured = {
            PurgerName.postgres: self.target_postgres_url is not None,
            PurgerName.mongodb: self.mongodb_url is not None,
            PurgerName.s3: self.s3_endpoint_url is not None or bool(self.s3_enabled_setting),
            PurgerName.meta_graph: self.token_encryption_key is not None,
        }
        both = sorted(name.value for name in self.absent_stores if configured[name])
        if both:
            raise ValueError(
                f"DELETION_ABSENT_STORES names {', '.join(both)}, which this deployment "
                "configures; remove it from one of the two"
            )

    def _check_production(self) -> None:
        """What only a production deployment must have: a tracking database and a public
        address of its own."""
        if "database_url" not in self.model_fields_set:
            # The default, a SQLite file in the working directory, would be lost with the
            # container (and is not shared by the API, the workers and the poller).
            raise ValueError(
                "DELETION_DATABASE_URL is required in production: the default SQLite file "
                "(./deletion.db) would be lost with the container; set a PostgreSQL URL "
                "(postgresql://...), or a sqlite:////path on a persistent volume for a "
                "single-process deployment"
            )
        if "public_base_url" not in self.model_fields_set:
            raise ValueError(
                "DELETION_PUBLIC_BASE_URL is required in production: it is the base of the "
                "status links handed to Meta and to people (https://...)"
            )
        if not self.public_base_url.startswith("https://"):
            raise ValueError("DELETION_PUBLIC_BASE_URL must be an https:// URL in production")

    def _check_secrets(self) -> None:
        """Outside development: a receipt key, a JWT secret (or a JWKS) and a hash key of
        its own, none of them a placeholder or the public development one."""
        if self.receipt_signing_key is None:
            raise ValueError(
                "DELETION_RECEIPT_SIGNING_KEY is required outside development "
                "(base64 of 32 random bytes: an Ed25519 private key)"
            )
        if (
            self.receipt_signing_key.get_secret_value().strip()
            == base64.b64encode(DEV_RECEIPT_SEED).decode()
        ):
            raise ValueError(
                "DELETION_RECEIPT_SIGNING_KEY is the public development key; "
                "it is refused outside development"
            )
        for name in ("jwt_secret", "hash_key"):
            secret: SecretStr | None = getattr(self, name)
            if name == "jwt_secret" and self.jwt_jwks_url:
                continue
            if secret is None or secret.get_secret_value().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(
                    f"DELETION_{name.upper()} is missing or a placeholder; "
                    f"it is required outside development"
                )
            if len(secret.get_secret_value()) < 16:
                raise ValueError(f"DELETION_{name.upper()} must be at least 16 characters")


@lru_cache
def get_settings() -> Settings:
    return Settings()
