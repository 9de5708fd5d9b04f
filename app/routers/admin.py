"""The operators' console (`/admin`): server-rendered pages over the same services as the
REST API; no JavaScript, nothing from another host. Session and CSRF: app.admin_session."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from app.admin_session import (
    COOKIE,
    COOKIE_PATH,
    LOGIN_COOKIE,
    LOGIN_COOKIE_SECONDS,
    MAX_TOKEN_LENGTH,
    AdminSession,
    csrf_valid,
    login_csrf,
    login_csrf_valid,
    new_login_nonce,
    open_session,
    same_origin,
    seconds_left,
)
from app.deps import State
from app.errors import ProblemError
from app.models import CANCELLABLE_STATUSES, RequestKind, RequestStatus
from app.repository import RequestFilter, list_events
from app.routers.presenters import request_out
from app.services.intake.email.review import NEEDS_CHOICE, candidate_subject
from app.settings import Environment
from app.subjects import Review

HERE = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=HERE / "templates")
CSS = HERE / "static" / "admin.css"
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
REFRESH_SECONDS = 5
MAX_FORM_BYTES = 16 * 1024
REJECTABLE = frozenset({RequestStatus.needs_review, RequestStatus.awaiting_confirmation})
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # the pages show personal data
}
# What an operator can correct a subject to (the identities a create accepts).
IDENTITIES = {
    RequestKind.account: ["site_name", "owner_email", "tenant_id"],
    RequestKind.meta_data: ["facebook_user_id", "ig_user_id", "ig_username", "facebook_page_name"],
    RequestKind.instagram_disconnect: [],
}

router = APIRouter(prefix="/admin", include_in_schema=False)


def _secured(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def _render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
    session: AdminSession | None = None,
) -> Response:
    page = templates.TemplateResponse(
        request, name, {"session": session, **context}, status_code=status_code
    )
    return _secured(page)


def _redirect(url: str) -> Response:
    return _secured(RedirectResponse(url, status_code=303))


def _to_login() -> Response:
    response = _redirect("/admin/login")
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


async def _session(state: State, request: Request) -> AdminSession | None:
    token = request.cookies.get(COOKIE)
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        return await open_session(state.settings, state.verifier, token)
    except ProblemError:  # expired, revoked scope, keys unreachable: sign in again
        return None


async def _form(request: Request) -> dict[str, str] | None:
    """An urlencoded form's fields (the first value of each); None for any other body."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return None
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return {key: values[0] for key, values in fields.items()}


def _origin_ok(state: State, request: Request) -> bool:
    hosts = {
        request.headers.get("host", "").lower(),
        urlsplit(state.settings.public_base_url).netloc,
    }
    return same_origin(request.headers.get("origin"), request.headers.get("referer"), hosts - {""})


async def _posted(
    state: State, request: Request
) -> tuple[AdminSession | None, dict[str, str] | Response]:
    """A console form's session and fields, or the answer: 303 to sign in without a
    session; 403 without a valid CSRF token or from another origin (nothing changes)."""
    session = await _session(state, request)
    if session is None:
        return None, _to_login()
    fields = await _form(request)
    if (
        fields is None
        or not _origin_ok(state, request)
        or not csrf_valid(session, fields.get("csrf"))
    ):
        page = _render(
            request,
            "admin/error.html",
            {
                "title": "Form refused",
                "message": "This form is out of date or did not come "
                "from this console. Reload the page and try again.",
            },
            status_code=403,
            session=session,
        )
        return session, page
    return session, fields


# --- sign-in --------------------------------------------------------------------------


@router.get("/static/admin.css")
async def stylesheet() -> Response:
    return _secured(FileResponse(CSS, media_type="text/css"))


@router.get("")
async def home(state: State, request: Request) -> Response:
    if await _session(state, request) is None:
        return _to_login()
    return _redirect("/admin/requests")


def _login_page(
    state: State, request: Request, *, error: str | None = None, status_code: int = 200
) -> Response:
    """The sign-in form, with a fresh nonce cookie and the CSRF token bound to it."""
    nonce = new_login_nonce()
    page = _render(
        request,
        "admin/login.html",
        {"title": "Sign in", "error": error, "csrf": login_csrf(state.settings, nonce)},
        status_code=status_code,
    )
    page.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_COOKIE_SECONDS,
        path=COOKIE_PATH,
        secure=state.settings.environment is not Environment.development,
        httponly=True,
        samesite="strict",
    )
    return page


@router.get("/login")
async def login_form(state: State, request: Request) -> Response:
    return _login_page(state, request)


@router.post("/login")
async def login(state: State, request: Request) -> Response:
    fields = await _form(request)
    error, status_code = None, 200
    if (
        fields is None
        or not _origin_ok(state, request)
        or not login_csrf_valid(
            state.settings, request.cookies.get(LOGIN_COOKIE), fields.get("csrf")
        )
    ):
        error, status_code = "The sign-in form was out of date or not from this console.", 403
    else:
        token = fields.get("token", "").strip()
        if not token or len(token) > MAX_TOKEN_LENGTH:
            error, status_code = "Paste an admin token (deletions:admin).", 401
        else:
            try:
                session = await open_session(state.settings, state.verifier, token)
            except ProblemError as exc:
                error, status_code = exc.detail, exc.status
    if error is not None:
        return _login_page(state, request, error=error, status_code=status_code)
    response = _redirect("/admin/requests")
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    response.set_cookie(
        COOKIE,
        token,
        max_age=seconds_left(session),
        expires=datetime.fromtimestamp(session.expires_at, UTC),
        path=COOKIE_PATH,
        secure=state.settings.environment is not Environment.development,
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
async def logout(state: State, request: Request) -> Response:
    _, fields = await _posted(state, request)
    if isinstance(fields, Response):
        return fields
    return _to_login()


# --- the request list -----------------------------------------------------------------


def _quick_links() -> list[tuple[str, str, dict[str, str]]]:
    links = [
        ("Review queue", {"status": RequestStatus.needs_review.value}),
        ("Overdue", {"overdue": "true"}),
        ("Failed", {"status": RequestStatus.failed.value}),
    ]
    on_hold = RequestStatus.__members__.get("on_hold")
    if on_hold is not None:  # the legal-hold status, where this build has it
        links.append(("On hold", {"status": on_hold.value}))
    return [(label, urlencode(query), query) for label, query in links]


@router.get("/requests")
async def request_list(state: State, request: Request) -> Response:
    session = await _session(state, request)
    if session is None:
        return _to_login()
    params = request.query_params
    filters: dict[str, str] = {}
    errors: list[str] = []
    status = kind = None
    if params.get("status"):
        try:
            status = RequestStatus(params["status"])
            filters["status"] = status.value
        except ValueError:
            errors.append("Unknown status; choose one from the list.")
    if params.get("kind"):
        try:
            kind = RequestKind(params["kind"])
            filters["kind"] = kind.value
        except ValueError:
            errors.append("Unknown kind; choose one from the list.")
    overdue = params.get("overdue") in {"true", "on", "1"}
    if overdue:
        filters["overdue"] = "true"
    limit = PAGE_SIZE
    if params.get("limit"):
        raw = params["limit"]
        if raw.isdigit() and 1 <= int(raw) <= MAX_PAGE_SIZE:
            limit = int(raw)
            filters["limit"] = raw
        else:
            errors.append(f"The page size is a number from 1 to {MAX_PAGE_SIZE}.")
    rows: list[Any] = []
    next_cursor = None
    if not errors:
        try:
            found, next_cursor = await state.requests.list(
                RequestFilter(status=status, kind=kind, overdue=overdue),
                limit=limit,
                cursor=params.get("cursor") or None,
            )
            rows = list(found)
        except ProblemError as exc:
            errors.append(exc.detail)
    now = datetime.now(UTC)
    return _render(
        request,
        "admin/requests.html",
        {
            "title": "Deletion requests",
            "rows": rows,
            "now": now,
            "filters": filters,
            "statuses": list(RequestStatus),
            "kinds": list(RequestKind),
            "quick_links": _quick_links(),
            "errors": errors,
            "next_url": (
                "/admin/requests?" + urlencode({**filters, "cursor": next_cursor})
                if next_cursor
                else None
            ),
            "paged": bool(params.get("cursor")),
            "first_url": "/admin/requests?" + urlencode(filters),
        },
        status_code=422 if errors else 200,
        session=session,
    )


# --- one request ----------------------------------------------------------------------


async def _request_page(
    state: State,
    request: Request,
    session: AdminSession,
    request_id: uuid.UUID,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    try:
        stored = await state.requests.get(request_id)
    except ProblemError as exc:
        if exc.status == 404:
            return _not_found(request, session, exc.detail)
        return _render(
            request,
            "admin/error.html",
            {"title": exc.title, "message": exc.detail},
            status_code=exc.status,
            session=session,
        )
    async with state.sessionmaker() as db:
        events = list(await list_events(db, request_id))
    status = RequestStatus(stored.status)
    out = request_out(stored, state.requests.status_url(stored), admin=True)
    kind = RequestKind(stored.kind)
    review = Review.model_validate(stored.review) if stored.review else Review()
    return _render(
        request,
        "admin/request.html",
        {
            "title": f"Request {stored.id}",
            "req": out,
            "subject": dict(stored.subject or {}),
            "tasks": list(zip(out.tasks, stored.tasks, strict=True)),
            "events": events,
            "review": review if status is RequestStatus.needs_review else None,
            "needs_choice": stored.review_reason in NEEDS_CHOICE,
            "identities": IDENTITIES[kind],
            "can_approve": status is RequestStatus.needs_review,
            "can_reject": status in REJECTABLE,
            "can_retry": status is RequestStatus.failed,
            "can_cancel": status in CANCELLABLE_STATUSES,
            "refresh": REFRESH_SECONDS if status is RequestStatus.running else None,
            "error": error,
        },
        status_code=status_code,
        session=session,
    )


def _not_found(request: Request, session: AdminSession, message: str) -> Response:
    return _render(
        request,
        "admin/error.html",
        {"title": "Not found", "message": message},
        status_code=404,
        session=session,
    )


def _uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


@router.get("/requests/{request_id}")
async def request_page(state: State, request: Request, request_id: str) -> Response:
    session = await _session(state, request)
    if session is None:
        return _to_login()
    parsed = _uuid(request_id)
    if parsed is None:
        return _not_found(request, session, "A request id is a whole UUID.")
    return await _request_page(state, request, session, parsed)


def _message(exc: ProblemError) -> str:
    """A service's refusal as a sentence, with the fields a validation error names."""
    located = [
        f"{'.'.join(str(part) for part in error.get('loc', []))}: {error.get('msg', '')}"
        for error in exc.extra.get("errors") or []
    ]
    return " ".join([exc.detail, *located])


def _approval_subject(
    kind: RequestKind, review: Review, fields: Mapping[str, str]
) -> dict[str, str] | None:
    """What the approve form chose: None (as named), a candidate's tenant, or another
    identity the operator typed. ``ValueError`` for a choice the form never offered."""
    choice = fields.get("choice", "")
    if choice == "named":
        return None
    if choice.startswith("candidate:"):
        index = int(choice.removeprefix("candidate:"))
        if not 0 <= index < len(review.candidates):
            raise ValueError(choice)
        return candidate_subject(kind, review.candidates[index])
    if choice == "other":
        identity, value = fields.get("identity", ""), fields.get("value", "").strip()
        if identity not in IDENTITIES[kind] or not value:
            raise ValueError(identity)
        return {identity: value}
    raise ValueError(choice)


@router.post("/requests/{request_id}/{action}")
async def act(state: State, request: Request, request_id: str, action: str) -> Response:
    """approve, reject, retry, cancel: the service methods the REST endpoints call."""
    session, fields = await _posted(state, request)
    if isinstance(fields, Response):
        return fields
    assert session is not None
    parsed = _uuid(request_id)
    if parsed is None or action not in {"approve", "reject", "retry", "cancel"}:
        return _not_found(request, session, "No such request or action.")
    return await _act(state, request, session, parsed, action, fields)


async def _act(
    state: State,
    request: Request,
    session: AdminSession,
    request_id: uuid.UUID,
    action: str,
    fields: Mapping[str, str],
) -> Response:
    actor = session.principal.subject
    reason = fields.get("reason", "").strip()[:2000] or None
    try:
        if action == "approve":
            stored = await state.requests.get(request_id)
            review = Review.model_validate(stored.review) if stored.review else Review()
            try:
                subject = _approval_subject(RequestKind(stored.kind), review, fields)
            except ValueError:
                return await _request_page(
                    state,
                    request,
                    session,
                    request_id,
                    error="Choose a candidate tenant, or give another identity and its value.",
                    status_code=422,
                )
            await state.email_requests.approve(request_id, operator=actor, subject=subject)
        elif action == "reject":
            await state.email_requests.reject(request_id, operator=actor, reason=reason)
        elif action == "retry":
            await state.requests.retry(request_id, actor=actor)
        else:
            await state.requests.cancel(request_id, actor=actor, reason=reason)
    except ProblemError as exc:
        return await _request_page(
            state, request, session, request_id, error=_message(exc), status_code=exc.status
        )
    if state.worker is not None:
        state.worker.wake()
    return _redirect(f"/admin/requests/{request_id}")
