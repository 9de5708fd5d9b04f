"""The retention guarantees of the SoundOps contract (`/v1/retention`)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import Reader, State
from app.routers.requests import problems
from app.schemas import RetentionItemOut, RetentionReportOut
from app.services.evidence import retention
from app.services.evidence.retention import RetentionReport

router = APIRouter(prefix="/v1/retention", tags=["operations"])


def report_out(report: RetentionReport) -> RetentionReportOut:
    return RetentionReportOut(
        ok=report.ok,
        items=[
            RetentionItemOut(
                store=item.store,
                name=item.name,
                expected=item.expected,
                status=item.status,
                found=item.found,
                detail=item.detail,
                action=item.action,
                mode=item.mode,
                mode_reason=item.mode_reason,
            )
            for item in report.items
        ],
    )


@router.get(
    "",
    response_model=RetentionReportOut,
    summary="Check the automatic-retention rules",
    description=(
        "Whether SoundOps' automatic deletion is in place with the contract's 30 days: the "
        "MongoDB TTL indexes on `instagram_messages.created_at` and "
        "`instagram_comments.created_at` (`expireAfterSeconds` 2592000), and a lifecycle rule "
        "on `soundops-ig-cache` that expires objects after 30 days. Always 200 with one item "
        'per rule: a server that cannot have the rule is `unsupported` ("unsupported by this '
        'server"), an absent store `not_configured`, a store that does not answer '
        "`unreachable`. Changes nothing of SoundOps' data; when a TTL index is absent, the check "
        "creates a TTL index on the scratch collection `soundops_deletion_ttl_probe` and drops "
        "it again, to tell `missing` from `unsupported`. "
        "`soundops-deletion retention apply` creates what is missing."
    ),
    responses=problems(401, 403),
)
async def get_retention(state: State, _principal: Reader) -> RetentionReportOut:
    return report_out(await retention.check(state.stores, state.settings))
