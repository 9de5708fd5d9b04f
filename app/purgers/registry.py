"""The typed registry of purgers, and how they are built from settings at start-up.

Every :class:`PurgerName` has a class here (a test checks it). A store with no
settings gets a :class:`NotConfigured` slot, so its tasks are ``skipped`` with
the reason; a store whose settings are present but unusable stops the service
at start-up (:class:`app.stores.StoreConfigError`), loudly, instead of leaving
data behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from app.datamap import DataMap
from app.purgers.base import NotConfigured, Purger, PurgerName
from app.purgers.meta_graph import MetaGraphPurger
from app.purgers.mongodb import MongoPurger
from app.purgers.postgres import PostgresPurger
from app.purgers.s3 import S3Purger
from app.purgers.testing import scripted_purgers
from app.services.engine import PurgerSlot
from app.settings import Settings
from app.stores import Stores

PURGER_CLASSES: dict[PurgerName, type[Any]] = {
    PurgerName.postgres: PostgresPurger,
    PurgerName.mongodb: MongoPurger,
    PurgerName.s3: S3Purger,
    PurgerName.meta_graph: MetaGraphPurger,
}


def _postgres(settings: Settings, datamap: DataMap, stores: Stores) -> PurgerSlot:
    if stores.target_engine is None:
        return NotConfigured(
            "the SoundOps database is not configured (DELETION_TARGET_POSTGRES_URL)"
        )
    return PostgresPurger(stores.target_engine, datamap.postgres)


def _mongodb(settings: Settings, datamap: DataMap, stores: Stores) -> PurgerSlot:
    if stores.mongo is None:
        return NotConfigured("MongoDB is not configured (DELETION_MONGODB_URL)")
    return MongoPurger(
        stores.mongo,
        settings.mongodb_database,
        datamap.mongodb,
        batch_size=settings.mongodb_batch_size,
    )


def _s3(settings: Settings, datamap: DataMap, stores: Stores) -> PurgerSlot:
    if stores.s3 is None:
        return NotConfigured("S3 is not configured (DELETION_S3_ENDPOINT_URL or AWS credentials)")
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
    if settings.testing_purgers is not None:
        scripted: Mapping[PurgerName, Purger] = scripted_purgers(settings.testing_purgers)
        return scripted
    return {name: BUILDERS[name](settings, datamap, stores) for name in PurgerName}
