"""The one-time confirmation link of a request that came by e-mail: public, no login.

GET shows what will be deleted and changes nothing (mail scanners open links); only the
page's POST confirms. The token in the path is the only secret: the answers are never
cached, never framed, and send no Referer; access logs show the path masked
(``app/logging.py``).
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.deps import ClientAddress, State
from app.purgers.base import SkipKind
from app.routers.requests import problems
from app.routers.status_page import KIND_TEXT, PAGE, STORE_TEXT, TOO_MANY_HTML, _date
from app.services.claims import SKIP_TEXT
from app.services.intake.email.service import ConfirmationView

router = APIRouter(tags=["public status"])

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}

Token = Annotated[str, Path(description="The one-time token from the e-mail.")]

HTML_ONLY: dict[str, Any] = {"content": {"text/html": {}}}
GONE_PAGES: dict[int | str, dict[str, Any]] = {
    404: {**HTML_ONLY, "description": "Unknown link (HTML page)."},
    410: {**HTML_ONLY, "description": "Used, expired or cancelled link (HTML page)."},
    429: {**HTML_ONLY, "description": "Rate limited (HTML page)."},
    **problems(422),
}

_GONE = {
    "used": (
        "This link has been used",
        "<p>The request was confirmed already; nothing more is needed from you.</p>",
    ),
    "expired": (
        "This link has expired",
        "<p>The request was not confirmed in time, so it was cancelled and nothing was "
        "deleted. To ask again, write to us as before.</p>",
    ),
    "cancelled": (
        "This request was cancelled",
        "<p>The request was cancelled, so nothing was deleted and this link no longer works.</p>",
    ),
    "unknown": (
        "Link not found",
        "<p>This confirmation link is not valid. Check that you opened the whole link "
        "from the e-mail.</p>",
    ),
}


def _page(title: str, content: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        PAGE.format(title=html.escape(title), content=content),
        status_code=status_code,
        headers=SECURITY_HEADERS,
    )


def _gone(view_state: str, code: str | None) -> HTMLResponse:
    title, text = _GONE[view_state]
    if view_state == "used" and code:
        text += f'<p><a href="/deletion-status/{html.escape(code)}">Follow the request</a>.</p>'
    return _page(title, text, 404 if view_state == "unknown" else 410)


def _store_rows(view: ConfirmationView) -> str:
    rows = []
    for item in view.stores:
        if item.skipped is not None:
            deleted = SKIP_TEXT[SkipKind.of(item.skipped)]
        else:
            deleted = f"{sum(item.result.deleted.values())} item(s)"
        kept = "; ".join(f"{r.count} kept: {r.reason}" for r in item.result.retained.values())
        rows.append(
            '<tr><th scope="row">{}</th><td>{}</td><td>{}</td></tr>'.format(
                html.escape(STORE_TEXT.get(item.purger, item.purger)),
                html.escape(deleted),
                html.escape(kept or "nothing"),
            )
        )
    return "".join(rows)


def render_confirmation(view: ConfirmationView) -> str:
    assert view.kind is not None
    if view.counted:
        what = (
            "<h2>What will be deleted</h2>"
            "<table><caption>Per store: what will be deleted, and what is kept and why"
            '</caption><thead><tr><th scope="col">Store</th><th scope="col">Deleted</th>'
            '<th scope="col">Kept (and why)</th></tr></thead><tbody>'
            + _store_rows(view)
            + "</tbody></table>"
        )
    else:
        what = (
            "<p>We could not count your data just now. Confirming still deletes all of it; "
            "you can follow every step on the status page afterwards.</p>"
        )
    return (
        "<dl>"
        f"<dt>Request</dt><dd>{html.escape(KIND_TEXT[view.kind])}</dd>"
        f"<dt>Link valid until</dt><dd>{_date(view.expires_at)}</dd>"
        "</dl>"
        "<p>Nothing has been deleted yet. Deletion cannot be undone.</p>"
        + what
        + '<form method="post"><button type="submit">Confirm: delete this data</button></form>'
    )


@router.get(
    "/deletion-confirm/{token}",
    response_class=HTMLResponse,
    summary="The confirmation page of a request from e-mail",
    description=(
        "Public, from the link mailed to the address on file. Shows what the request will "
        "delete and keep, per store (no personal data), and a button that POSTs the "
        "confirmation. Changes nothing. Used, expired or cancelled links answer 410, "
        "unknown ones 404."
    ),
    responses={200: {"description": "The confirmation page (HTML)."}, **GONE_PAGES},
)
async def confirmation_page(state: State, client: ClientAddress, token: Token) -> Response:
    if not state.status_limiter.allow(client):
        return HTMLResponse(TOO_MANY_HTML, 429, headers={"Retry-After": "60", **SECURITY_HEADERS})
    view = await state.email_requests.view(token)
    if view.state != "valid":
        return _gone(view.state, view.confirmation_code)
    return _page("Confirm your deletion request", render_confirmation(view))


@router.post(
    "/deletion-confirm/{token}",
    response_class=HTMLResponse,
    status_code=303,
    summary="Confirm a request from e-mail",
    description=(
        "The confirmation page's button. Moves the request from `awaiting_confirmation` to "
        "`pending` (once: concurrent or repeated POSTs confirm it once) and redirects (303) "
        "to its public status page. Used, expired or cancelled links answer 410, unknown "
        "ones 404, and change nothing."
    ),
    responses={
        303: {"description": "Confirmed: see the request's status page (`Location`)."},
        **GONE_PAGES,
    },
)
async def confirm_request(state: State, client: ClientAddress, token: Token) -> Response:
    if not state.status_limiter.allow(client):
        return HTMLResponse(TOO_MANY_HTML, 429, headers={"Retry-After": "60", **SECURITY_HEADERS})
    outcome = await state.email_requests.confirm(token)
    code = outcome.request.confirmation_code if outcome.request is not None else None
    if outcome.outcome != "confirmed":
        return _gone(outcome.outcome, code)
    if state.worker is not None:
        state.worker.wake()
    return RedirectResponse(f"/deletion-status/{code}", 303, headers=SECURITY_HEADERS)
