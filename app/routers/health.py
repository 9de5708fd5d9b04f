"""Liveness and readiness."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import State
from app.purgers.base import NotConfigured
from app.schemas import Health
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
    summary="The service can do its work",
    description=(
        "Checks the tracking database, every configured store (PostgreSQL, MongoDB, S3) and, "
        "when it runs in this process, the worker loop. "
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
    checks.update(await _store_checks(state))
    if state.settings.run_worker:
        worker = state.worker
        checks["worker"] = (
            "ok" if worker is not None and worker.healthy else "unavailable (stalled)"
        )
    ready = all(value == "ok" for value in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
