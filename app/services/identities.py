"""Identities in canonical form, and their keyed hashes (what is kept after minimisation)."""

from __future__ import annotations

import uuid

from pydantic import ValidationError

from app.datamap import Resolution
from app.pii import keyed_hash
from app.subjects import AccountSubject, MetaDataSubject

# Resolved sets, named as the identity they hold.
RESOLVED_AS = {
    "tenant_ids": "tenant_id",
    "account_ids": "instagram_account_id",
    "ig_user_ids": "ig_user_id",
}


def canonical(name: str, value: str) -> str:
    """The value as intake stores it (lower-cased e-mails, usernames without @, …)."""
    if name in AccountSubject.model_fields:
        subject: AccountSubject | MetaDataSubject = AccountSubject.model_validate({name: value})
    elif name in MetaDataSubject.model_fields:
        subject = MetaDataSubject.model_validate({name: value})
    elif name == "instagram_account_id":
        return str(uuid.UUID(value))
    else:
        raise ValueError(f"unknown identity {name}")
    return subject.identities()[name]


def identity_hash(key: bytes, name: str, value: str) -> str:
    return keyed_hash(key, f"{name}={value}")


def hashes(
    key: bytes, identities: dict[str, str], resolution: Resolution | None = None
) -> set[str]:
    pairs: list[tuple[str, str]] = list(identities.items())
    if resolution is not None:
        for field, name in RESOLVED_AS.items():
            pairs += [(name, value) for value in getattr(resolution, field)]
    return {identity_hash(key, name, value) for name, value in pairs}


def lookup_hash(key: bytes, expression: str) -> str:
    """``identity=value`` (as an operator types it) -> the hash to look for."""
    name, sep, value = expression.partition("=")
    if not sep or not value.strip():
        raise ValueError("give the subject as identity=value, e.g. site_name=the-band")
    try:
        return identity_hash(key, name.strip(), canonical(name.strip(), value.strip()))
    except ValidationError as exc:
        raise ValueError(f"the value is not a valid {name.strip()}") from exc
