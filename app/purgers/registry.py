"""The typed registry of purgers, and how they are built from settings at start-up.

Every :class:`PurgerName` has a class here (a test checks it), which builds itself from
the settings (:class:`~app.purgers.base.RegisteredPurger`). A store declared in
``DELETION_ABSENT_STORES`` gets an absent :class:`NotConfigured` slot: its tasks are
``skipped`` as "not part of this deployment". In production every other store that a
plan uses (``required``) must be configured, or the service does not start (naming it);
development and test skip an unconfigured store as "not configured". A store whose
settings are present but unusable stops the service at start-up
(:class:`app.stores.StoreConfigError`), loudly, instead of leaving data behind.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from app.datamap import DataMap
from app.purgers.base import NotConfigured, PurgerName, PurgerSlot, RegisteredPurger
from app.purgers.meta_graph import MetaGraphPurger
from app.purgers.mongodb import MongoPurger
from app.purgers.postgres import PostgresPurger
from app.purgers.s3 import S3Purger
from app.settings import Environment, Settings
from app.stores import StoreConfigError, Stores

PURGERS: dict[PurgerName, type[RegisteredPurger]] = {
    PurgerName.postgres: PostgresPurger,
    PurgerName.mongodb: MongoPurger,
    PurgerName.s3: S3Purger,
    PurgerName.meta_graph: MetaGraphPurger,
}


def build_purgers(
    settings: Settings,
    datamap: DataMap,
    stores: Stores,
    *,
    required: Collection[PurgerName],
) -> Mapping[PurgerName, PurgerSlot]:
    """One slot per store; ``required``: the stores that a plan uses."""
    slots: dict[PurgerName, PurgerSlot] = {
        name: NotConfigured(name.value, absent=True)
        if name in settings.absent_stores
        else PURGERS[name].build(settings, datamap, stores)
        for name in PurgerName
    }
    if settings.environment is Environment.production:
        missing = [
            f"{name.value} ({slot.detail})"
            for name, slot in slots.items()
            if name in required and isinstance(slot, NotConfigured) and not slot.absent
        ]
        if missing:
            raise StoreConfigError(
                "not configured: " + "; ".join(missing) + ". Configure each, or declare it "
                "in DELETION_ABSENT_STORES if this deployment deliberately has no such store"
            )
    return slots
