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


@dataclass(frozen=True)
class NamedTenant:
    """A tenant that a name in an e-mail matched, with the address on file for it."""

    tenant_id: uuid.UUID
    owner_email: str
    identity: str  # the data-map identity that matched (site_name, ig_username, ...)
    value: str  # the matched value as stored


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

    def _tenant_columns(self) -> tuple[str, str, str]:
        pg = self._map.postgres
        owner = pg.identities["owner_email"]
        if owner.table != pg.tenant_table:
            raise ValueError("the data map's owner_email must be a column of the tenant table")
        return pg.tenant_table, pg.tables[pg.tenant_table].key, owner.column

    async def tenants_by(self, identity: str, values: list[str]) -> list[NamedTenant]:
        """Tenants whose ``identity`` (a column of the tenant or the account table) equals
        one of ``values``, ignoring case; each with its owner's address."""
        if not values:
            return []
        pg = self._map.postgres
        spec = pg.identities[identity]
        tenants, key, owner = self._tenant_columns()
        tenant = sa.table(tenants, sa.column(key, sa.Uuid), sa.column(owner, sa.Text))
        lowered = sorted({value.lower() for value in values})
        if spec.table == tenants:
            column = sa.literal_column(f'"{tenants}"."{spec.column}"', sa.Text)
            query = sa.select(tenant.c[key], tenant.c[owner], column).where(
                sa.func.lower(column).in_(lowered)
            )
        elif spec.table == pg.account_table:
            column = self._col(spec.column, sa.Text)
            query = (
                sa.select(tenant.c[key], tenant.c[owner], column)
                .select_from(sa.table(pg.account_table))
                .join(tenant, self._col(pg.account_tenant_column, sa.Uuid) == tenant.c[key])
                .where(sa.func.lower(column).in_(lowered))
            )
        else:
            raise ValueError(f"{identity} is not on the tenant or the account table")
        rows = await self._rows(query)
        return [NamedTenant(r[0], str(r[1]), identity, str(r[2])) for r in rows if r[1]]
