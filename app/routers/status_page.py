"""The public status page of a request: no login, no personal data."""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import HTMLResponse, JSONResponse, Response

from app.deps import ClientAddress, State
from app.http_errors import problem_response
from app.routers.presenters import status_page
from app.routers.requests import problems
from app.schemas import Problem, StatusPageOut

router = APIRouter(tags=["public status"])

KIND_TEXT = {
    "account": "Deletion of a SoundOps account",
    "meta_data": "Deletion of data received from Facebook or Instagram",
    "instagram_disconnect": "Disconnection of an Instagram account",
}
STATUS_TEXT = {
    "awaiting_confirmation": "Waiting for the account owner to confirm by e-mail",
    "needs_review": "Being reviewed by our privacy team",
    "pending": "Received, waiting to start",
    "running": "In progress",
    "completed": "Completed",
    "failed": "Delayed: it could not be completed automatically and waits for our team",
    "cancelled": "Cancelled",
    # A legal hold: said as such, never why (the reason is the operators' only).
    "on_hold": "On hold: paused for now; it will continue when the hold is lifted",
}
STORE_TEXT = {
    "postgres": "Account database",
    "mongodb": "Instagram messages and comments",
    "s3": "Uploaded files and media",
    "meta_graph": "Permissions and notifications at Meta",
}
# Said of a failed request only when it is true: a notice of its failure reached the team.
ALERTED_TEXT = "Delayed: our team has been alerted and will complete it"
TASK_TEXT = {
    "pending": "not started",
    "running": "in progress",
    "retrying": "in progress (retrying)",
    "failed": "delayed",
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;
line-height:1.5;color:#111}}table{{border-collapse:collapse;width:100%}}
th,td{{text-align:left;padding:.4rem;border-bottom:1px solid #ccc}}</style>
</head><body><main>
<h1>{title}</h1>
{content}
</main></body></html>
"""


def _date(value: object) -> str:
    return html.escape(f"{value:%d %B %Y, %H:%M} UTC") if value else "-"


def render_html(page: StatusPageOut) -> str:
    rows = []
    for store in page.stores:
        retained = "; ".join(
            f"{item.count} kept: {item.reason}" for item in store.retained.values()
        )
        outcome = store.outcome or TASK_TEXT.get(store.status, store.status)
        if written := sum(store.as_third_party.values()):
            outcome += f" (of which {written} item(s) you wrote to other accounts)"
        rows.append(
            '<tr><th scope="row">{}</th><td>{}</td><td>{}</td></tr>'.format(
                html.escape(STORE_TEXT.get(store.store, store.store)),
                html.escape(outcome),
                html.escape(retained or "nothing"),
            )
        )
    text = ALERTED_TEXT if page.team_alerted else STATUS_TEXT[page.status]
    status = text + (f": {page.summary}" if page.summary else "")
    content = (
        "<dl>"
        f"<dt>Request</dt><dd>{html.escape(KIND_TEXT[page.kind])}</dd>"
        f"<dt>Status</dt><dd><strong>{html.escape(status)}</strong></dd>"
        f"<dt>Received</dt><dd>{_date(page.received_at)}</dd>"
        f"<dt>Due by</dt><dd>{_date(page.due_at)}</dd>"
        f"<dt>Completed</dt><dd>{_date(page.completed_at)}</dd>"
        f"<dt>Backup copies</dt><dd>{html.escape(page.backups.statement)}</dd>"
        "</dl>"
        "<h2>Where your data was</h2>"
        "<table><caption>Per store: what happened, and what was kept and why</caption>"
        '<thead><tr><th scope="col">Store</th><th scope="col">Status</th>'
        '<th scope="col">Kept (and why)</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )
    return PAGE.format(title="Your data deletion request", content=content)


TOO_MANY_HTML = PAGE.format(
    title="Please wait a moment",
    content="<p>Too many look-ups from your address. Please try again in a minute.</p>",
)

NOT_FOUND_HTML = PAGE.format(
    title="Request not found",
    content="<p>No deletion request has this confirmation code. Check the link you were given.</p>",
)


def _wants_json(accept: str | None) -> bool:
    return (
        bool(accept) and "application/json" in (accept or "") and "text/html" not in (accept or "")
    )


@router.get(
    "/deletion-status/{confirmation_code}",
    summary="Public status of a deletion request",
    description="HTML for browsers; JSON with `Accept: application/json`. No personal data.",
    response_model=StatusPageOut,
    responses={
        200: {"content": {"text/html": {}}, "description": "The status (HTML or JSON)."},
        404: {"model": Problem, "content": {"text/html": {}}, "description": "Unknown code."},
        429: {"model": Problem, "content": {"text/html": {}}, "description": "Rate limited."},
        **problems(422),
    },
)
async def deletion_status(
    state: State,
    client: ClientAddress,
    confirmation_code: Annotated[str, Path(max_length=64)],
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    if not state.status_limiter.allow(client):
        if _wants_json(accept):
            return problem_response(
                429,
                "Too many requests",
                "Slow down and try again in a minute.",
                headers={"Retry-After": "60"},
            )
        return HTMLResponse(TOO_MANY_HTML, status_code=429, headers={"Retry-After": "60"})
    found = (
        await state.requests.get_by_code(confirmation_code) if confirmation_code.isalnum() else None
    )
    if found is None:
        if _wants_json(accept):
            return problem_response(404, "Not found", "No deletion request has this code.")
        return HTMLResponse(NOT_FOUND_HTML, status_code=404)
    page = status_page(
        found,
        state.requests.backup_horizon(found),
        team_alerted=await state.requests.team_alerted(found),
    )
    if _wants_json(accept):
        return JSONResponse(page.model_dump(mode="json"))
    return HTMLResponse(render_html(page))
