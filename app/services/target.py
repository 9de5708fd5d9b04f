"""Read-only look-ups in the SoundOps main database that intake needs (names from the data map)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.datamap import DataMap


class TargetUnavailable(Exception):
    """The SoundOps database could not be reached."""


@dataclass(frozen=True)
class ConnectedAccount:
    account_id: uuid.UUID
    tenant_id: uuid.UUID
    connected_at: datetime | None


class TargetDirectory:
    def __init__(self, engine: AsyncEngine, datamap: DataMap) -> None:
        self._engine = engine
        self._map = datamap

    def _col(self, column: str, type_: Any = None) -> sa.ColumnClause[Any]:
        return sa.literal_column(f'"{self._map.postgres.account_table}"."{column}"', type_)

    async def _rows(self, query: sa.Select[Any]) -> list[Any]:
        try:
            async with self._engine.connect() as connection:
                return list((await connection.execute(query)).all())
        except (DBAPIError, OSError, TimeoutError) as exc:
            raise TargetUnavailable from exc

    async def account_belongs_to_tenant(
        self, tenant_id: uuid.UUID, instagram_account_id: uuid.UUID
    ) -> bool:
        pg = self._map.postgres
        key = pg.tables[pg.account_table].key
        query = (
            sa.select(sa.literal(1))
            .select_from(sa.table(pg.account_table))
            .where(
                self._col(key, sa.Uuid) == instagram_account_id,
                self._col(pg.account_tenant_column, sa.Uuid) == tenant_id,
            )
        )
        return bool(await self._rows(query))

    async def connected_accounts(self, identity: str, value: str) -> list[ConnectedAccount]:
        """Connected accounts of a person, by an identity of the map (e.g. ig_user_id)."""
        pg, meta = self._map.postgres, self._map.meta_graph
        key = pg.tables[pg.account_table].key
        query = (
            sa.select(
                self._col(key, sa.Uuid),
                self._col(pg.account_tenant_column, sa.Uuid),
                self._col(meta.columns.connected_at, sa.DateTime(timezone=True)),
            )
            .select_from(sa.table(pg.account_table))
            .where(
                self._col(pg.identities[identity].column) == value,
                self._col(meta.columns.status) == meta.connected,
            )
        )
        return [ConnectedAccount(r[0], r[1], r[2]) for r in await self._rows(query)]
