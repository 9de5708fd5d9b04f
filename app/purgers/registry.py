"""The typed registry of purgers, and how they are built from settings at start-up.

Every :class:`PurgerName` has a class here (a test checks it). A store declared in
``DELETION_ABSENT_STORES`` gets an absent :class:`NotConfigured` slot: its tasks are
``skipped`` as "not part of this deployment". In production every other store that a
plan uses must be configured, or the service does not start (naming it); development
and test skip an unconfigured store as "not configured". A store whose settings are
present but unusable stops the service at start-up (:class:`app.stores.StoreConfigError`),
loudly, instead of leaving data behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from app.datamap import DataMap
from app.purgers.base import NotConfigured, PurgerName
from app.purgers.meta_graph import MetaGraphPurger
from app.purgers.mongodb import MongoPurger
from app.purgers.postgres import PostgresPurger
from app.purgers.s3 import S3Purger
from app.services.engine import PurgerSlot
from app.services.plans import PLANS
from app.settings import Environment, Settings
from app.stores import StoreConfigError, Stores

PURGER_CLASSES: dict[PurgerName, type[Any]] = {
    PurgerName.postgres: PostgresPurger,
    PurgerName.mongodb: MongoPurger,
    PurgerName.s3: S3Purger,
    PurgerName.meta_graph: MetaGraphPurger,
}


def _postgres(settings: Settings, datamap: DataMap, stores: Stores) -> PurgerSlot:
    if stores.target_engine is None:
        return NotConfigured("the SoundOps database (DELETION_TARGET_POSTGRES_URL)")
    return PostgresPurger(stores.target_engine, datamap.postgres)


def _mongodb(settings: Settings, datamap: DataMap, stores: Stores) -> PurgerSlot:
    if stores.mongo is None:
        return NotConfigured("MongoDB (DELETION_MONGODB_URL)")
    return MongoPurger(
        stores.mongo,
        settings.mongodb_database,
        datamap.mongodb,
        batch_size=settings.mongodb_batch_size,
    )


def _s3(settings: Settings, datamap: DataMap, stores: Stores) -> PurgerSlot:
    if stores.s3 is None:
        return NotConfigured("S3 (DELETION_S3_ENDPOINT_URL or AWS credentials)")
    return S3Purger(stores.s3, datamap.s3)


def _meta_graph(settings: Settings, datamap: DataMap, stores: Stores) -> PurgerSlot:
    return MetaGraphPurger.build(settings, datamap, stores)


BUILDERS: dict[PurgerName, Callable[[Settings, DataMap, Stores], PurgerSlot]] = {
    PurgerName.postgres: _postgres,
    PurgerName.mongodb: _mongodb,
    PurgerName.s3: _s3,
    PurgerName.meta_graph: _meta_graph,
}


def build_purgers(
    settings: Settings, datamap: DataMap, stores: Stores
) -> Mapping[PurgerName, PurgerSlot]:
    slots: dict[PurgerName, PurgerSlot] = {
        name: NotConfigured(name.value, absent=True)
        if name in settings.absent_stores
        else BUILDERS[name](settings, datamap, stores)
        for name in PurgerName
    }
    if settings.environment is Environment.production:
        planned = {task.purger for plan in PLANS.values() for task in plan}
        missing = [
            f"{name.value} ({slot.detail})"
            for name, slot in slots.items()
            if name in planned and isinstance(slot, NotConfigured) and not slot.absent
        ]
        if missing:
            raise StoreConfigError(
                "not configured: " + "; ".join(missing) + ". Configure each, or declare it "
                "in DELETION_ABSENT_STORES if this deployment deliberately has no such store"
            )
    return slots
