"""Read-only look-ups in the SoundOps main database that intake needs (names from the data map)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.datamap import DataMap, Selection
from app.names import normalise_as, prefilter


class TargetUnavailable(Exception):
    """The SoundOps database could not be reached."""


@dataclass(frozen=True)
class ConnectedAccount:
    account_id: uuid.UUID
    tenant_id: uuid.UUID
    connected_at: datetime | None


@dataclass(frozen=True)
class NamedTenant:
    """A tenant that a name matched (through one of its connected accounts when the
    identity is a column of the account table), with the address on file for it."""

    tenant_id: uuid.UUID
    owner_email: str | None
    site_name: str
    identity: str  # the data-map identity that matched (site_name, ig_username, ...)
    value: str  # the matched value as stored
    account_id: uuid.UUID | None = None
    facebook_page_id: str | None = None
    facebook_page_name: str | None = None

    def candidate(self) -> dict[str, str | None]:
        """As an operator's review shows it (``review.candidates``)."""
        return {
            "tenant_id": str(self.tenant_id),
            "site_name": self.site_name,
            "instagram_account_id": str(self.account_id) if self.account_id else None,
            "facebook_page_name": self.facebook_page_name,
        }


def selection_of(named: list[NamedTenant]) -> Selection:
    """The tenants and accounts that these matches are: what a request is pinned to."""
    return Selection(
        tenant_ids=sorted({str(n.tenant_id) for n in named}),
        account_ids=sorted({str(n.account_id) for n in named if n.account_id is not None}),
    )


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

    def _tenant_columns(self) -> tuple[str, str, str, str]:
        pg = self._map.postgres
        owner = pg.identities["owner_email"]
        site = pg.identities["site_name"]
        if owner.table != pg.tenant_table or site.table != pg.tenant_table:
            raise ValueError(
                "the data map's owner_email and site_name must be columns of the tenant table"
            )
        return pg.tenant_table, pg.tables[pg.tenant_table].key, owner.column, site.column

    async def tenants_by(
        self, identity: str, values: list[str], *, normalised: bool | None = None
    ) -> list[NamedTenant]:
        """Tenants whose ``identity`` (a column of the tenant or the account table) is one
        of ``values``, each with its owner's address; one per matching account for an
        identity of the account table.

        ``normalised``: compare after the one normalisation (``app.names``); by default as
        the run-time resolution compares (the data map's ``casefold``). E-mail intake
        compares every name people write normalised.
        """
        if not values:
            return []
        pg, meta = self._map.postgres, self._map.meta_graph
        spec = pg.identities[identity]
        tenants, key, owner, site = self._tenant_columns()
        tenant = sa.table(
            tenants,
            sa.column(key, sa.Uuid),
            sa.column(owner, sa.Text),
            sa.column(site, sa.Text),
        )
        columns: list[Any] = [tenant.c[key], tenant.c[owner], tenant.c[site]]
        if spec.table == tenants:
            column = sa.literal_column(f'"{tenants}"."{spec.column}"', sa.Text)
            query = sa.select(*columns, column)
        elif spec.table == pg.account_table:
            column = self._col(spec.column, sa.Text)
            account_key = pg.tables[pg.account_table].key
            query = (
                sa.select(
                    *columns,
                    column,
                    self._col(account_key, sa.Uuid),
                    self._col(meta.columns.facebook_page_id, sa.Text),
                    self._col(pg.identities["facebook_page_name"].column, sa.Text),
                )
                .select_from(sa.table(pg.account_table))
                .join(tenant, self._col(pg.account_tenant_column, sa.Uuid) == tenant.c[key])
            )
        else:
            raise ValueError(f"{identity} is not on the tenant or the account table")
        compare = spec.casefold if normalised is None else normalised
        if spec.type == "uuid":
            wanted = {str(uuid.UUID(v)) for v in values}
            query = query.where(sa.cast(column, sa.Text).in_(sorted(wanted)))
        elif compare:
            wanted = {normalise_as(identity, v) for v in values}
            query = query.where(prefilter(identity, column, wanted))
        else:
            wanted = set(values)
            query = query.where(column.in_(sorted(wanted)))
        found = []
        for row in await self._rows(query):
            stored = str(row[3])
            if (normalise_as(identity, stored) if compare else stored) not in wanted:
                continue  # the pre-filter lets through more than the one normalisation
            found.append(NamedTenant(row[0], row[1], str(row[2]), identity, stored, *row[4:]))
        return found
