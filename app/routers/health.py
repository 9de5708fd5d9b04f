"""Liveness and readiness: of this process (``/readyz``) and of the stores (``/readyz/stores``)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import State
from app.purgers.base import NotConfigured
from app.schemas import Health, RetentionModeOut, StoresHealth
from app.services.evidence import retention
from app.services.evidence.retention import RetentionItem
from app.state import AppState

router = APIRouter(tags=["operations"])


async def _ping(slot: object) -> str:
    ping = getattr(slot, "ping", None)
    try:
        async with asyncio.timeout(3):
            await ping()  # type: ignore[misc]
    except Exception as exc:  # not ready, whatever the reason; the type names it
        return f"unavailable ({type(exc).__name__})"
    return "ok"


async def _store_checks(state: AppState) -> dict[str, str]:
    """Every configured store that can be pinged (Meta's Graph API is not pinged)."""
    names = [
        name
        for name, slot in state.purgers.items()
        if not isinstance(slot, NotConfigured) and callable(getattr(slot, "ping", None))
    ]
    results = await asyncio.gather(*(_ping(state.purgers[name]) for name in names))
    return dict(zip(names, results, strict=True))


async def _retention_modes(state: AppState) -> list[RetentionItem]:
    """The modes of this process's worker's last retention pass; without one (no worker
    here, or before its first pass), a fresh check."""
    enforcer = state.worker.retention if state.worker is not None else None
    if enforcer is not None and enforcer.last is not None:
        return enforcer.last.report.items
    return (await retention.check(state.stores, state.settings)).items


@router.get(
    "/healthz",
    response_model=Health,
    summary="The process is alive",
    description="Answers 200 while the process serves HTTP; checks no dependency.",
)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="This process can do its work",
    description=(
        "Checks what this process needs: the tracking database and, when it runs in this "
        "process, the worker loop. Not the stores (`/readyz/stores`): a store that is down "
        "makes requests wait and retry, it does not make this process unfit to take them. "
        "503 names the checks that failed."
    ),
    responses={503: {"model": Health, "description": "A dependency is unavailable."}},
)
async def readyz(state: State) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with state.tracking_db.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))
        checks["tracking_db"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the type says which
        checks["tracking_db"] = f"unavailable ({type(exc).__name__})"
    if state.settings.run_worker:
        worker = state.worker
        checks["worker"] = (
            "ok" if worker is not None and worker.healthy else "unavailable (stalled)"
        )
    ready = all(value == "ok" for value in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/readyz/stores",
    response_model=StoresHealth,
    summary="Every configured store is reachable",
    description=(
        "Pings every configured store (PostgreSQL, MongoDB, S3; Meta's Graph API is not "
        "pinged), and says who enforces SoundOps' retention at each location: `ttl` / "
        "`lifecycle` (the store's own rule), `sweep` (the worker deletes expired data "
        "itself), `none` (nothing, right now), with the reason. 503 names the stores that "
        "do not answer."
    ),
    responses={503: {"model": StoresHealth, "description": "A store is unavailable."}},
)
async def readyz_stores(state: State) -> JSONResponse:
    checks, items = await asyncio.gather(_store_checks(state), _retention_modes(state))
    ready = all(value == "ok" for value in checks.values())
    body = StoresHealth(
        status="ok" if ready else "unavailable",
        checks=checks,
        retention=[
            RetentionModeOut(
                store=item.store,
                location=item.name,
                mode=item.mode or "none",
                reason=item.mode_reason or "",
            )
            for item in items
        ],
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)
