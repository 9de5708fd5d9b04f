"""The typed registry of purgers and how they are built from settings at start-up."""

from __future__ import annotations

from collections.abc import Mapping

from app.purgers.base import PurgerName
from app.purgers.testing import scripted_purgers
from app.services.engine import NotConfigured, PurgerSlot
from app.settings import Settings


class PurgerConfigError(RuntimeError):
    """A purger's settings are present but unusable: the service must not start."""


def build_purgers(settings: Settings) -> Mapping[PurgerName, PurgerSlot]:
    if settings.testing_purgers is not None:
        return scripted_purgers(settings.testing_purgers)
    configured = {
        PurgerName.postgres: settings.target_postgres_url,
        PurgerName.mongodb: settings.mongodb_url,
        PurgerName.s3: settings.s3_endpoint_url,
        PurgerName.meta_graph: settings.token_encryption_key,
    }
    slots: dict[PurgerName, PurgerSlot] = {}
    for name, setting in configured.items():
        if setting is not None:
            raise PurgerConfigError(f"the {name} store is configured but its purger is not built")
        slots[name] = NotConfigured(f"the {name} store is not configured")
    return slots
