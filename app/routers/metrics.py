"""``GET /metrics``: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app import metrics
from app.deps import State

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Task outcomes, durations, retries, items deleted; queue gauges from the DB.",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def prometheus(state: State) -> Response:
    await metrics.refresh(state.tracking_db)
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
