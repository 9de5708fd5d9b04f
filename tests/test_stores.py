"""Stores whose settings are present but unusable stop the service at start-up, loudly."""

from __future__ import annotations

from typing import Any

import pytest

from app.main import create_app
from app.stores import StoreConfigError
from tests.app_fixtures import make_settings


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("mongodb_url", "notmongo://127.0.0.1", "DELETION_MONGODB_URL"),
        ("token_encryption_key", "not-a-fernet-key", "DELETION_TOKEN_ENCRYPTION_KEY"),
        ("target_postgres_url", "postgresql+nosuchdriver://x@y/z", "DELETION_TARGET_POSTGRES_URL"),
    ],
)
async def test_unusable_store_settings_fail_at_start_up(
    tmp_path: Any, setting: str, value: str, named: str
) -> None:
    overrides: dict[str, Any] = {setting: value}
    if setting == "token_encryption_key":
        overrides["target_postgres_url"] = "postgresql://x@127.0.0.1:9/soundops"
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 't.db'}", **overrides))
    with pytest.raises(StoreConfigError, match=named):
        async with app.router.lifespan_context(app):
            pass
