"""FastAPI dependencies: the app state, the caller and its scopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import Principal, Scope, require_scope
from app.errors import Unauthorized
from app.ratelimit import client_address
from app.state import AppState

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="A JWT with the scopes deletions:read, deletions:write or deletions:admin.",
)


async def get_state(request: Request) -> AppState:
    # async: a plain function would be run in a worker thread on every request.
    state: AppState = request.app.state.services
    return state


State = Annotated[AppState, Depends(get_state)]


async def get_client_address(state: State, request: Request) -> str:
    """Whom a public page's rate limit counts: see :func:`app.ratelimit.client_address`."""
    peer = request.client.host if request.client else "unknown"
    return client_address(
        peer, request.headers.getlist("x-forwarded-for"), state.settings.forwarded_allow_ips
    )


ClientAddress = Annotated[str, Depends(get_client_address)]


async def _verified(state: AppState, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("A bearer token is required.")
    return await state.verifier.verify(credentials.credentials)


async def get_principal(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    return await _verified(state, credentials)


def scoped(
    scope: Scope,
) -> Callable[[Request, HTTPAuthorizationCredentials | None], Awaitable[Principal]]:
    # One dependency with the bearer scheme as its only sub-dependency (not one on
    # get_principal on get_state): FastAPI resolves every level per request, and on
    # intake the levels cost more than the check (the same scheme in the OpenAPI).
    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        principal = await _verified(request.app.state.services, credentials)
        require_scope(principal, scope)
        return principal

    return dependency


Reader = Annotated[Principal, Depends(scoped(Scope.read))]
Writer = Annotated[Principal, Depends(scoped(Scope.write))]
Admin = Annotated[Principal, Depends(scoped(Scope.admin))]
