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


async def get_principal(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("A bearer token is required.")
    return await state.verifier.verify(credentials.credentials)


def scoped(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    async def dependency(
        principal: Annotated[Principal, Depends(get_principal)],
    ) -> Principal:
        require_scope(principal, scope)
        return principal

    return dependency


Reader = Annotated[Principal, Depends(scoped(Scope.read))]
Writer = Annotated[Principal, Depends(scoped(Scope.write))]
Admin = Annotated[Principal, Depends(scoped(Scope.admin))]
