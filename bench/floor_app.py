"""The thinnest-endpoint floor of the intake benchmark: FastAPI, PyJWT, one asyncpg INSERT.

The thinnest correct ``POST /v1/deletion-requests`` on the same stack as the service:
uvicorn (with the service's options: uvloop and httptools where installed, no access
log of its own), FastAPI with a pydantic body, the bearer token verified with PyJWT on
every request (HS256, audience, ``exp`` and ``sub`` required, the write scope), and one
raw asyncpg ``INSERT`` into the service's own ``deletion_requests`` table (a database
migrated like the service's, so the same columns and unique indexes) through a pool from
``asyncpg.create_pool`` of the service's size, autocommit, with no reset query on
release (nothing to reset after one autocommit INSERT). No ORM, no middleware, no
logging. Answers 202 with the new request's id, status and creation time.

    FLOOR_DATABASE_URL=postgresql://... FLOOR_JWT_SECRET=... \
        .venv/bin/python -m bench.floor_app --port P
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
import jwt
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

AUDIENCE = "soundops-deletion"
WRITE_SCOPE = "deletions:write"
POOL_SIZE = 40  # the service's (app/db.py)
INSERT = """
INSERT INTO deletion_requests (
    id, kind, status, source, requested_by, subject, subject_key, confirmation_code,
    created_at, updated_at, due_at, run_after, notify_attempts
) VALUES ($1, $2, 'pending', 'api', $3, $4::jsonb, $5, $6, $7, $7, $8, $7, 0)
"""


class Subject(BaseModel):
    tenant_id: uuid.UUID


class CreateBody(BaseModel):
    kind: Literal["account"]
    subject: Subject


bearer = HTTPBearer()
SECRET = os.environ.get("FLOOR_JWT_SECRET", "")


async def writer(
    credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)],
) -> str:
    try:
        claims = jwt.decode(
            credentials.credentials,
            SECRET,
            algorithms=["HS256"],
            audience=AUDIENCE,
            options={"require": ["exp", "sub"]},
        )
    except jwt.PyJWTError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token") from exc
    if WRITE_SCOPE not in str(claims.get("scope", "")).split():
        raise HTTPException(status.HTTP_403_FORBIDDEN, "needs deletions:write")
    return str(claims["sub"])


async def _keep_session(_connection: asyncpg.Connection[Any]) -> None:
    """Nothing to reset: the one autocommit INSERT leaves no session state behind.

    asyncpg's default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release, one more round trip per request (about 0.1 ms, on the
    latency path at 1 connection). The service's single statements skip it as well
    (``app.db``'s lane keeps their connections without a reset); the pool still rolls
    back a connection left in a transaction before it calls this."""


def create_app() -> FastAPI:
    url = os.environ["FLOOR_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    pool: dict[str, asyncpg.Pool[Any]] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pool["db"] = await asyncpg.create_pool(
            url, min_size=1, max_size=POOL_SIZE, reset=_keep_session
        )
        try:
            yield
        finally:
            await pool["db"].close()

    app = FastAPI(title="intake floor", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/deletion-requests", status_code=status.HTTP_202_ACCEPTED)
    async def create(
        body: CreateBody, requested_by: Annotated[str, Depends(writer)], request: Request
    ) -> dict[str, str]:
        subject = json.dumps({"tenant_id": str(body.subject.tenant_id)})
        now = datetime.now(UTC)
        request_id = uuid.uuid4()
        await pool["db"].execute(
            INSERT,
            request_id,
            body.kind,
            requested_by,
            subject,
            hashlib.sha256(f"{body.kind}{subject}".encode()).hexdigest(),
            secrets.token_urlsafe(24),
            now,
            now + timedelta(days=30),
        )
        return {"id": str(request_id), "status": "pending", "created_at": now.isoformat()}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(
        "bench.floor_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
