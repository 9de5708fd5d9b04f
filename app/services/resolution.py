"""Identity resolution: what a subject stands for in the stores, found once before purging.

Selection by connection: a request reaches the ``instagram_accounts`` rows its
identity matches (the tenant's, for an account deletion), and everything else
through those rows. Another tenant's connection of the same Instagram account is
reached only when the identity is the Instagram account itself (the data map's
``reaches: instagram_account``); the Instagram accounts that a connection outside
the request still has are resolved as ``shared_ig_user_ids``, so that what is keyed
only by the Instagram account is kept for them.

Third-party data subjects: a ``meta_data`` request by ``ig_username`` also reaches what
that person wrote to any tenant (documents whose ``from_username`` is the username,
``third_party_usernames``; see :func:`writer_usernames`), whether or not they have a
connection, and also when pinned. No other identity reaches it: only the username names
the writer of a comment or message.

Every purger selects by the resolution (tenant ids, account ids, Instagram user
ids), not by the identities as given: the PostgreSQL purger deletes the rows
that identities are looked up in, and the other stores must still find their
data afterwards. The resolution is stored on the request (raw, until the
request is minimised) next to its keyed hashes (the lasting evidence).
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.datamap import Identity, PostgresMap, Reach, Resolution, Selection
from app.models import RequestKind
from app.names import normalise_as, normalise_username, prefilter
from app.pii import keyed_hash
from app.purgers.base import PurgeFailed, PurgeRetriable
from app.purgers.postgres import transient_sqlstate


def _col(table: str, column: str, type_: Any = None) -> sa.ColumnClause[Any]:
    return sa.literal_column(f'"{table}"."{column}"', type_)


class ResolverLike(Protocol):
    """What the engine and the preview resolve subjects with (:class:`Resolver`, or a
    stand-in in tests)."""

    async def resolve(
        self, kind: RequestKind, identities: dict[str, str], pinned: Selection | None = None
    ) -> Resolution: ...


class Resolver:
    """``page_id_column``: the account table's Page id column (the data map's
    ``meta_graph.columns.facebook_page_id``): a ``facebook_page_name`` matching accounts
    of more than one Page is ambiguous and resolves to nothing (the request fails)."""

    def __init__(
        self,
        engine: AsyncEngine | None,
        tables: PostgresMap | None,
        *,
        page_id_column: str | None = None,
    ) -> None:
        self._engine = engine
        self._map = tables
        self._page_id_column = page_id_column

    async def resolve(
        self, kind: RequestKind, identities: dict[str, str], pinned: Selection | None = None
    ) -> Resolution:
        """What the subject stands for now; with ``pinned`` (a confirmed or approved
        request), never more than those tenants (``account``) or accounts (``meta_data``)."""
        if self._engine is None or self._map is None:
            resolution = self._without_database(kind, identities)
        else:
            resolution = await self._resolve_or_raise(kind, identities, pinned)
        return resolution if pinned is None else restricted(kind, resolution, pinned)

    async def _resolve_or_raise(
        self, kind: RequestKind, identities: dict[str, str], pinned: Selection | None
    ) -> Resolution:
        try:
            return await self._resolve(kind, identities, pinned)
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
        if kind is RequestKind.meta_data and "ig_username" in identities:
            # No connection can be looked up; what the person wrote is still found.
            return Resolution(third_party_usernames=writer_usernames(kind, identities))
        if kind is RequestKind.meta_data and "ig_user_id" in identities:
            named = [identities["ig_user_id"]]
            return Resolution(ig_user_ids=named, subject_ig_user_ids=named)
        (name,) = identities
        raise PurgeFailed(f"{name} cannot be resolved without the SoundOps database")

    async def _match(
        self, conn: AsyncConnection, name: str, value: str, pinned: Selection | None
    ) -> sa.ColumnElement[bool]:
        """Rows of the identity's table that ``name = value`` selects; with ``pinned``, only
        the pinned ones of them (the tenants of the tenant table, the accounts of the
        account table)."""
        assert self._map is not None
        identity = self._map.identities[name]
        key = _col(identity.table, self._map.tables[identity.table].key, sa.Uuid)
        if identity.type == "uuid":
            match = _col(identity.table, identity.column, sa.Uuid) == uuid.UUID(value)
        elif identity.casefold:
            match = key.in_(await self._keys_by_name(conn, name, identity, value, pinned))
        else:
            match = _col(identity.table, identity.column) == value
        within = _pinned_keys(self._map, identity.table, pinned)
        return match if within is None else sa.and_(match, key.in_(within))

    async def _keys_by_name(
        self,
        conn: AsyncConnection,
        name: str,
        identity: Identity,
        value: str,
        pinned: Selection | None,
    ) -> list[uuid.UUID]:
        """Keys of the rows whose value is ``value`` after the one normalisation (a SQL
        pre-filter, then the exact comparison here). A Page name of accounts of more than
        one Page (after pinning) is ambiguous: ``PurgeFailed``."""
        assert self._map is not None
        table = identity.table
        key = _col(table, self._map.tables[table].key, sa.Uuid)
        column = _col(table, identity.column, sa.Text)
        page: sa.ColumnElement[Any] = sa.null()  # all rows alike: never ambiguous
        if name == "facebook_page_name" and self._page_id_column is not None:
            page = _col(table, self._page_id_column, sa.Text)
        wanted = normalise_as(name, value)
        query = sa.select(key, column, page).select_from(sa.table(table))
        query = query.where(prefilter(name, column, {wanted}))
        within = _pinned_keys(self._map, table, pinned)
        if within is not None:
            query = query.where(key.in_(within))
        rows = [r for r in (await conn.execute(query)).all() if normalise_as(name, r[1]) == wanted]
        page_ids = {r[2] for r in rows}
        if len(page_ids) > 1:
            raise PurgeFailed(
                f"the {name} names {len(page_ids)} different Pages; file one request per "
                "Page, by facebook_user_id or ig_user_id"
            )
        return [r[0] for r in rows]

    async def _resolve(
        self, kind: RequestKind, identities: dict[str, str], pinned: Selection | None
    ) -> Resolution:
        """Tenants and connections first; then, by the identity's reach, the Instagram accounts.

        Everything else is selected through the connections found here (the data map's
        ``reaches``): another tenant's connection of the same Instagram account only
        when the identity is that Instagram account, and, for a pinned request, only
        within its pin."""
        assert self._engine is not None and self._map is not None
        pg = self._map
        tenants, accounts = pg.tenant_table, pg.account_table
        tenant_key = pg.tables[tenants].key
        reach: Reach = "connections"
        named: set[str] = set()
        async with self._engine.connect() as conn:
            if kind is RequestKind.account:
                ((name, value),) = identities.items()
                email = pg.identities["owner_email"].column
                query = sa.select(_col(tenants, tenant_key), _col(tenants, email))
                query = query.select_from(sa.table(tenants))
                rows = (
                    await conn.execute(query.where(await self._match(conn, name, value, pinned)))
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
                account = await self._match(
                    conn, "instagram_account_id", identities["instagram_account_id"], pinned
                )
                tenant = _col(accounts, pg.account_tenant_column, sa.Uuid) == uuid.UUID(
                    identities["tenant_id"]
                )
                where = sa.and_(account, tenant)
                tenant_ids, owner_emails = [], []
            else:
                ((name, value),) = identities.items()
                identity = pg.identities[name]
                where = await self._match(conn, name, value, pinned)
                reach = identity.reaches
                if reach == "instagram_account" and identity.column == pg.account_ig_user_column:
                    # Data about this Instagram user can outlive its connection row.
                    named.add(value)
                tenant_ids, owner_emails = [], []
            connections = await self._connections(conn, where)
            subject_ig_user_ids: set[str] = set()
            if reach == "instagram_account":
                # The identity is the Instagram account: every connection of it, any tenant's.
                subject_ig_user_ids = named | {ig for _, _, ig in connections}
                if subject_ig_user_ids:
                    ig_column = _col(accounts, pg.account_ig_user_column)
                    widened: sa.ColumnElement[bool] = ig_column.in_(sorted(subject_ig_user_ids))
                    within = _pinned_keys(pg, accounts, pinned)
                    if within is not None:
                        key = _col(accounts, pg.tables[accounts].key, sa.Uuid)
                        widened = sa.and_(widened, key.in_(within))
                    connections = await self._connections(conn, widened)
            account_ids = sorted({account for account, _, _ in connections})
            ig_user_ids = {ig for _, _, ig in connections} | subject_ig_user_ids
            shared = await self._shared(conn, sorted(ig_user_ids), account_ids)
        # An Instagram account that a connection outside the request still has (one that a
        # pin leaves out) is never reached by its own id: that would reach those connections.
        subject_ig_user_ids -= set(shared)
        if kind is not RequestKind.account:
            tenant_ids = sorted({tenant for _, tenant, _ in connections})
        return Resolution(
            tenant_ids=sorted(tenant_ids),
            account_ids=account_ids,
            ig_user_ids=sorted(ig_user_ids),
            shared_ig_user_ids=shared,
            subject_ig_user_ids=sorted(subject_ig_user_ids),
            third_party_usernames=writer_usernames(kind, identities),
            owner_emails=owner_emails,
        )

    async def _connections(
        self, conn: AsyncConnection, where: sa.ColumnElement[bool]
    ) -> list[tuple[str, str, str]]:
        """(account id, tenant id, Instagram user id) of the account rows that match."""
        assert self._map is not None
        pg, accounts = self._map, self._map.account_table
        query = sa.select(
            _col(accounts, pg.tables[accounts].key),
            _col(accounts, pg.account_tenant_column),
            _col(accounts, pg.account_ig_user_column),
        ).select_from(sa.table(accounts))
        rows = (await conn.execute(query.where(where))).all()
        return [(str(row[0]), str(row[1]), str(row[2])) for row in rows]

    async def _shared(
        self, conn: AsyncConnection, ig_user_ids: list[str], account_ids: list[str]
    ) -> list[str]:
        """Of ``ig_user_ids``, those that an account row outside ``account_ids`` still has."""
        if not ig_user_ids:
            return []
        assert self._map is not None
        pg, accounts = self._map, self._map.account_table
        ig_column = _col(accounts, pg.account_ig_user_column)
        key = _col(accounts, pg.tables[accounts].key, sa.Uuid)
        query = (
            sa.select(ig_column)
            .select_from(sa.table(accounts))
            .where(ig_column.in_(ig_user_ids), key.not_in([uuid.UUID(a) for a in account_ids]))
            .distinct()
        )
        return sorted(str(row[0]) for row in (await conn.execute(query)).all())


def writer_usernames(kind: RequestKind, identities: dict[str, str]) -> list[str]:
    """The ``from_username`` values that a request reaches as a third-party data subject:
    only a ``meta_data`` request by ``ig_username`` (only the username identifies the
    writer of a comment or message; a Facebook id, a Page name or an ``ig_user_id`` never
    reaches what someone wrote).

    Documents keep ``from_username`` as Instagram gave it. Instagram usernames are
    lower-case ASCII (``[a-z0-9._]``), so the one normalisation leaves them unchanged and
    an equality on the normalised value finds them, pushed down on FerretDB and served by
    an index on MongoDB. A value stored in another case (not seen from Instagram) is
    found when it is spelled as in the request: the value as given (without its ``@``) is
    matched too when it differs but normalises to the same name. Any other spelling would
    need a scan of every document, which this service does not do; such a document stays
    until the 30-day retention removes it.

    A pinned request (confirmed or approved) reaches them as well: the pin limits the
    connections, and what the named person wrote is the request's own subject."""
    if kind is not RequestKind.meta_data or "ig_username" not in identities:
        return []
    given = identities["ig_username"].strip().lstrip("@").strip()
    wanted = normalise_username(given)
    if not wanted:
        return []
    return sorted({wanted, given} if normalise_username(given) == wanted and given else {wanted})


def _pinned_keys(
    tables: PostgresMap, table: str, pinned: Selection | None
) -> list[uuid.UUID] | None:
    """The keys of ``table`` a pinned request may reach (None: not restricted)."""
    if pinned is None:
        return None
    if table == tables.tenant_table:
        return [uuid.UUID(t) for t in pinned.tenant_ids]
    if table == tables.account_table:
        return [uuid.UUID(a) for a in pinned.account_ids]
    return None


def restricted(kind: RequestKind, resolution: Resolution, pinned: Selection) -> Resolution:
    """The last word of a pinned request: no tenant outside the pin and, for ``meta_data``,
    no account outside it (an ``account`` request reaches every account of its tenant)."""
    update: dict[str, list[str]] = {
        "tenant_ids": [t for t in resolution.tenant_ids if t in pinned.tenant_ids]
    }
    if kind is not RequestKind.account:
        update["account_ids"] = [a for a in resolution.account_ids if a in pinned.account_ids]
    return resolution.model_copy(update=update)


def digest(resolution: Resolution, key: bytes) -> dict[str, list[str]]:
    """The resolution as keyed hashes: evidence of what was matched, without the ids."""
    return {
        name: [keyed_hash(key, value) for value in values]
        for name, values in resolution.model_dump().items()
    }
