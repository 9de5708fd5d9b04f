"""The service's parts wired from its settings, without its web app: every client and
service (:func:`build_state`), closed again by :func:`close_state`, and a worker on them.

``app.main`` serves them over HTTP; the CLI's one-off commands use them directly, and so
do not import FastAPI, uvicorn and the routers (0.4 s of a command's 2.6 s start-up)."""

from __future__ import annotations

from collections.abc import Mapping

from app.auth import TokenVerifier
from app.datamap import load_datamap
from app.db import create_engine, create_sessionmaker, release_driver_connections
from app.purgers.base import PurgerName, PurgerSlot
from app.purgers.registry import build_purgers
from app.ratelimit import RateLimiter
from app.services.evidence.retention.enforce import RetentionEnforcer
from app.services.execution import Engine, Worker, new_worker_id
from app.services.holds import HoldService
from app.services.intake.email.inbound import InboundMail
from app.services.intake.email.service import EmailRequests
from app.services.intake.email.writers import Writers
from app.services.intake.meta.callbacks import MetaCallbacks
from app.services.intake.rest import RequestService
from app.services.plans import planned_purgers
from app.services.preview import PreviewService
from app.services.resolution import Resolver, ResolverLike
from app.services.target import TargetDirectory
from app.settings import Settings
from app.state import AppState
from app.stores import open_stores


async def build_state(
    settings: Settings,
    *,
    purgers: Mapping[PurgerName, PurgerSlot] | None = None,
    resolver: ResolverLike | None = None,
) -> AppState:
    """Every client and service of the app. ``purgers`` and ``resolver`` replace the ones
    the settings describe (the tests' doubles); a deployment passes neither."""
    datamap = load_datamap(settings.data_map)
    tracking_db = create_engine(settings.database_url)
    stores = await open_stores(settings)
    try:
        if purgers is None:
            purgers = build_purgers(settings, datamap, stores, required=planned_purgers())
    except BaseException:
        await stores.aclose()
        await tracking_db.dispose()
        raise
    sessionmaker = create_sessionmaker(tracking_db)
    directory = (
        TargetDirectory(stores.target_engine, datamap) if stores.target_engine is not None else None
    )
    if resolver is None:
        resolver = Resolver(
            stores.target_engine,
            datamap.postgres,
            page_id_column=datamap.meta_graph.columns.facebook_page_id,
        )
    request_service = RequestService(settings, sessionmaker, settings.effective_hash_key, directory)
    preview = PreviewService(purgers, resolver)
    return AppState(
        settings=settings,
        tracking_db=tracking_db,
        sessionmaker=sessionmaker,
        stores=stores,
        datamap=datamap,
        verifier=TokenVerifier(settings, stores.http),
        requests=request_service,
        holds=HoldService(sessionmaker, settings.effective_hash_key),
        purgers=purgers,
        resolver=resolver,
        preview=preview,
        meta=MetaCallbacks(settings, request_service, directory, sessionmaker),
        status_limiter=RateLimiter(settings.status_page_per_minute),
        email_requests=EmailRequests(settings, sessionmaker, preview, directory),
        inbound=InboundMail(
            settings, sessionmaker, directory, Writers(purgers.get(PurgerName.mongodb))
        ),
    )


async def close_state(state: AppState) -> None:
    await state.stores.aclose()
    await release_driver_connections(state.tracking_db)  # closed with the pool's own
    await state.tracking_db.dispose()


def new_engine(state: AppState, worker_id: str | None = None) -> Engine:
    """One worker's executor (:class:`Engine`), wired from the state."""
    return Engine(
        state.settings,
        state.sessionmaker,
        state.purgers,
        worker_id or new_worker_id(),
        state.resolver,
        http=state.http,
        datamap_version=state.datamap.version,
        meta=state.meta,
    )


def new_worker(state: AppState) -> Worker:
    engine = new_engine(state)
    retention = RetentionEnforcer(
        state.settings, state.stores, state.sessionmaker, engine.worker_id
    )
    state.worker = Worker(engine, retention)
    return state.worker
