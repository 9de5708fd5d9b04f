"""The stack's floor for the intake benchmark: one validated body, one INSERT, 202.

Same stack as the service: uvicorn (started exactly as ``soundops-deletion serve``
starts the service), FastAPI with a pydantic body and response model, SQLAlchemy 2
async over asyncpg with the engine of ``app.db.create_engine`` (same pool settings).
No authentication, no middleware, no logging of its own: the floor is what the
stack costs before the service does anything of its own.

    FLOOR_DATABASE_URL=postgresql+asyncpg://... .venv/bin/python -m bench.floor_app --port P
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from fastapi import FastAPI, Request, status
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine

metadata = sa.MetaData()
floor_requests = sa.Table(
    "floor_requests",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("subject", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


class Subject(BaseModel):
    tenant_id: uuid.UUID


class CreateBody(BaseModel):
    kind: Literal["account"]
    subject: Subject


class Created(BaseModel):
    id: uuid.UUID
    kind: str
    status: str
    created_at: datetime


def create_app() -> FastAPI:
    url = os.environ["FLOOR_DATABASE_URL"]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        app.state.engine = engine
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(title="intake floor", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/deletion-requests", status_code=status.HTTP_202_ACCEPTED, response_model=Created)
    async def create(body: CreateBody, request: Request) -> Created:
        engine: AsyncEngine = request.app.state.engine
        row = Created(
            id=uuid.uuid4(), kind=body.kind, status="pending", created_at=datetime.now(UTC)
        )
        async with engine.begin() as conn:
            await conn.execute(
                floor_requests.insert(),
                {
                    "id": row.id,
                    "kind": row.kind,
                    "subject": body.subject.model_dump(mode="json"),
                    "created_at": row.created_at,
                },
            )
        return row

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    import uvicorn

    # The same call as `soundops-deletion serve` (app/cli/service.py), so the same uvicorn options.
    uvicorn.run(
        "bench.floor_app:create_app", factory=True, host=args.host, port=args.port, log_level="info"
    )


if __name__ == "__main__":
    main()
