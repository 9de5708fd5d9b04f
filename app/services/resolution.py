"""Identity resolution: what a subject stands for in the stores, found once before purging.

Every purger selects by the resolution (tenant ids, account ids, Instagram user
ids), not by the identities as given: the PostgreSQL purger deletes the rows
that identities are looked up in, and the other stores must still find their
data afterwards. The resolution is stored on the request (raw, until the
request is minimised) next to its keyed hashes (the lasting evidence).
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.datamap import Identity, PostgresMap, Resolution
from app.models import RequestKind
from app.pii import keyed_hash
from app.purgers.base import PurgeFailed, PurgeRetriable
from app.purgers.postgres import transient_sqlstate


def _col(table: str, column: str, type_: Any = None) -> sa.ColumnClause[Any]:
    return sa.literal_column(f'"{table}"."{column}"', type_)


def _normalise_sql(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """lower(), trimmed, inner whitespace folded: how identities are compared by name."""
    folded = sa.func.regexp_replace(sa.func.btrim(column), r"\s+", " ", "g")
    return sa.func.lower(folded)


def _normalise(value: str) -> str:
    return " ".join(value.split()).lower()


class Resolver:
    def __init__(self, engine: AsyncEngine | None, tables: PostgresMap | None) -> None:
        self._engine = engine
        self._map = tables

    async def resolve(self, kind: RequestKind, identities: dict[str, str]) -> Resolution:
        if self._engine is None or self._map is None:
            return self._without_database(kind, identities)
        try:
            return await self._resolve(kind, identities)
        except (OperationalError, InterfaceError, OSError, TimeoutError) as exc:
            raise PurgeRetriable(f"PostgreSQL unreachable ({type(exc).__name__})") from exc
        except DBAPIError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None)
            if exc.connection_invalidated or transient_sqlstate(sqlstate):
                raise PurgeRetriable(f"PostgreSQL unavailable (SQLSTATE {sqlstate})") from exc
            raise PurgeFailed(f"identity look-up failed ({type(exc.orig).__name__})") from exc

    def _without_database(self, kind: RequestKind, identities: dict[str, str]) -> Resolution:
        """No SoundOps database configured: only ids given directly can be used."""
        if kind is RequestKind.instagram_disconnect:
            return Resolution(
                tenant_ids=[identities["tenant_id"]],
                account_ids=[identities["instagram_account_id"]],
            )
        if kind is RequestKind.account and "tenant_id" in identities:
            return Resolution(tenant_ids=[identities["tenant_id"]])
        if kind is RequestKind.meta_data and "ig_user_id" in identities:
            return Resolution(ig_user_ids=[identities["ig_user_id"]])
        (name,) = identities
        raise PurgeFailed(f"{name} cannot be resolved without the SoundOps database")

    def _match(self, identity: Identity, value: str) -> sa.ColumnElement[bool]:
        column = _col(identity.table, identity.column)
        if identity.type == "uuid":
            return _col(identity.table, identity.column, sa.Uuid) == uuid.UUID(value)
        if identity.casefold:
            return _normalise_sql(column) == _normalise(value)
        return column == value

    async def _resolve(self, kind: RequestKind, identities: dict[str, str]) -> Resolution:
        assert self._engine is not None and self._map is not None
        pg = self._map
        tenants, accounts = pg.tenant_table, pg.account_table
        tenant_key = pg.tables[tenants].key
        account_key = pg.tables[accounts].key
        account_cols = (
            _col(accounts, account_key),
            _col(accounts, pg.account_tenant_column),
            _col(accounts, pg.account_ig_user_column),
        )
        async with self._engine.connect() as conn:
            if kind is RequestKind.account:
                ((name, value),) = identities.items()
                email = pg.identities["owner_email"].column
                query = sa.select(_col(tenants, tenant_key), _col(tenants, email))
                query = query.select_from(sa.table(tenants))
                rows = (
                    await conn.execute(query.where(self._match(pg.identities[name], value)))
                ).all()
                owner_emails = sorted({str(row[1]) for row in rows if row[1]})
                if len(rows) > 1:
                    raise PurgeFailed(
                        f"the {name} matches {len(rows)} accounts; "
                        "file one request per account, by tenant_id or site_name"
                    )
                tenant_ids = [str(row[0]) for row in rows]
                where: sa.ColumnElement[bool] = _col(
                    accounts, pg.account_tenant_column, sa.Uuid
                ).in_([uuid.UUID(t) for t in tenant_ids])
            elif kind is RequestKind.instagram_disconnect:
                account = self._match(
                    pg.identities["instagram_account_id"], identities["instagram_account_id"]
                )
                tenant = _col(accounts, pg.account_tenant_column, sa.Uuid) == uuid.UUID(
                    identities["tenant_id"]
                )
                where = sa.and_(account, tenant)
                tenant_ids, owner_emails = [], []
            else:
                ((name, value),) = identities.items()
                where = self._match(pg.identities[name], value)
                tenant_ids, owner_emails = [], []
            accounts_query = sa.select(*account_cols).select_from(sa.table(accounts)).where(where)
            account_rows: list[Any] = list((await conn.execute(accounts_query)).all())
        account_ids = sorted({str(row[0]) for row in account_rows})
        ig_user_ids = {str(row[2]) for row in account_rows}
        if kind is not RequestKind.account:
            tenant_ids = sorted({str(row[1]) for row in account_rows})
        if kind is RequestKind.meta_data and "ig_user_id" in identities:
            # Data about this Instagram user can outlive its connection row.
            ig_user_ids.add(identities["ig_user_id"])
        return Resolution(
            tenant_ids=sorted(tenant_ids),
            account_ids=account_ids,
            ig_user_ids=sorted(ig_user_ids),
            owner_emails=owner_emails,
        )


def digest(resolution: Resolution, key: bytes) -> dict[str, list[str]]:
    """The resolution as keyed hashes: evidence of what was matched, without the ids."""
    return {
        name: [keyed_hash(key, value) for value in values]
        for name, values in resolution.model_dump().items()
    }
