"""The PostgreSQL purger: the SoundOps main database, driven entirely by the data map.

Deletes, for the request's kind, every row of every table that the map says the
kind reaches from its root (the tenant for ``account``, the matched Instagram
accounts otherwise), children before parents, in bounded batches of set-based
statements (one transaction per batch, so a crash leaves a consistent, resumable
state). Updates rows where the map says so (a disconnect clears tokens, cancels
scheduled posts, disables automations; an update ``held_for_revoke`` (the
tokens) only when the Meta step does not run, see ``Subject.revoke_deadline``).
Keeps what the map retains or keeps, and reports it with the reason (invoices,
for tax law: their link to the tenant is set to NULL).

Rows are selected by the request's resolution (tenant ids, account ids), so a
re-run after a crash, or after everything is gone, selects what is left and
deletes it; ``verify`` counts again with the same predicates.

Raises ``PurgeRetriable`` when the database is unreachable or in a state that
passes (shutting down or starting up, too many connections, a deadlock or
serialization failure), ``PurgeFailed`` for anything else (a foreign key the map
does not know of, a missing table), never with a value of a row in the message.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.datamap import DataMap, PostgresMap, Table, TableAction
from app.models import RequestKind
from app.purgers.base import (
    NO_PROGRESS,
    NotConfigured,
    Progress,
    PurgeFailed,
    PurgeResult,
    PurgeRetriable,
    PurgerName,
    Retained,
    Subject,
)
from app.settings import Settings
from app.stores import Stores

Where = sa.ColumnElement[bool]


def _value_clause(column: sa.ColumnClause[Any], value: Any) -> Where:
    return column.is_(None) if value is None else column == value


class PostgresPurger:
    name: ClassVar[PurgerName] = PurgerName.postgres

    def __init__(self, engine: AsyncEngine, tables: PostgresMap, batch_size: int = 5_000) -> None:
        self._engine = engine
        self._map = tables
        self._batch = batch_size

    @classmethod
    def build(
        cls, settings: Settings, datamap: DataMap, stores: Stores
    ) -> PostgresPurger | NotConfigured:
        if stores.target_engine is None:
            return NotConfigured("the SoundOps database (DELETION_TARGET_POSTGRES_URL)")
        return cls(stores.target_engine, datamap.postgres)

    # --- predicates built from the map -----------------------------------------------

    def _table(self, name: str) -> sa.TableClause:
        return sa.table(name)

    def _col(self, table: str, column: str, type_: Any = None) -> sa.ColumnClause[Any]:
        # Qualified by name: a subquery over the same table refers to its own FROM, never
        # to the outer statement's. Names are validated identifiers (app/datamap.py).
        return sa.literal_column(f'"{table}"."{column}"', type_)

    def _root_ids(self, subject: Subject) -> list[uuid.UUID]:
        ids = (
            subject.resolution.tenant_ids
            if subject.kind is RequestKind.account
            else subject.resolution.account_ids
        )
        return [uuid.UUID(value) for value in ids]

    def _predicate(self, kind: RequestKind, name: str, root_ids: list[uuid.UUID]) -> Where:
        """Rows of ``name`` that belong to the root rows, through the map's owners."""
        reached = set(self._map.reached(kind))
        root = self._map.root(kind)

        def build(table_name: str) -> Where:
            table = self._map.tables[table_name]
            if table_name == root:
                return self._col(table_name, table.key, sa.Uuid).in_(root_ids)
            clauses: list[Where] = []
            for owner in table.owners:
                if owner.references not in reached or owner.references == table_name:
                    continue
                parent = self._map.tables[owner.references]
                parent_key = self._col(owner.references, parent.key)
                parents = sa.select(parent_key).select_from(self._table(owner.references))
                parents = parents.where(build(owner.references))
                clauses.append(self._col(table_name, owner.column).in_(parents))
            return sa.or_(sa.false(), *clauses)

        return build(name)

    def _where(self, name: str, where: dict[str, Any]) -> Where:
        return sa.and_(sa.true(), *(_value_clause(self._col(name, k), v) for k, v in where.items()))

    def _not_yet(self, name: str, values: dict[str, Any]) -> Where:
        """Rows an update has not reached yet (``now()`` values are not compared)."""
        clauses = [
            self._col(name, column).is_distinct_from(value)
            for column, value in values.items()
            if value != "now()"
        ]
        return sa.or_(*clauses) if clauses else sa.true()

    def _set(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: (sa.func.now() if v == "now()" else v) for k, v in values.items()}

    # --- statements ------------------------------------------------------------------

    async def _count(self, conn: AsyncConnection, name: str, where: Where) -> int:
        query = sa.select(sa.func.count()).select_from(self._table(name)).where(where)
        return int((await conn.execute(query)).scalar_one())

    def _batch_rows(self, name: str, where: Where) -> sa.ColumnElement[bool]:
        ctid: sa.ColumnClause[Any] = sa.literal_column(f'"{name}".ctid')
        batch = sa.select(ctid).select_from(self._table(name)).where(where).limit(self._batch)
        return ctid.in_(batch)

    async def _in_batches(
        self, make: Callable[[], sa.Executable], progress: Progress = NO_PROGRESS, key: str = ""
    ) -> int:
        """Run a bounded statement again until it touches no row; one transaction each,
        reported to ``progress`` under ``key`` once committed."""
        total = 0
        while True:
            async with self._engine.begin() as conn:
                result = await conn.execute(make())
            count = int(result.rowcount)
            total += count
            if count == 0:
                return total
            await progress.deleted({key: count})

    async def _delete(self, name: str, where: Where, progress: Progress = NO_PROGRESS) -> int:
        table = self._table(name)
        return await self._in_batches(
            lambda: sa.delete(table).where(self._batch_rows(name, where)), progress, name
        )

    async def _update(
        self,
        name: str,
        where: Where,
        values: dict[str, Any],
        progress: Progress = NO_PROGRESS,
        key: str = "",
    ) -> int:
        table = sa.table(name, *(sa.column(column) for column in values))
        pending = sa.and_(where, self._not_yet(name, values))
        return await self._in_batches(
            lambda: (
                sa.update(table).where(self._batch_rows(name, pending)).values(self._set(values))
            ),
            progress,
            key,
        )

    # --- the protocol ----------------------------------------------------------------

    def _steps(self, subject: Subject) -> list[tuple[str, Table, TableAction, Where]]:
        root_ids = self._root_ids(subject)
        steps = []
        for name in self._map.reached(subject.kind):
            table = self._map.tables[name]
            action = table.kinds[subject.kind]
            if subject.revoke_deadline is not None:  # the Meta step holds the tokens
                kept = [u for u in action.update if not u.held_for_revoke]
                action = action.model_copy(update={"update": kept})
            steps.append((name, table, action, self._predicate(subject.kind, name, root_ids)))
        return steps

    async def preview(self, subject: Subject) -> PurgeResult:
        if not self._root_ids(subject):
            return PurgeResult()
        deleted: dict[str, int] = {}
        retained: dict[str, Retained] = {}
        async with _errors(), self._engine.connect() as conn:
            for name, _, action, owned in self._steps(subject):
                if action.delete:
                    deleted[name] = await self._count(
                        conn, name, sa.and_(owned, self._where(name, action.where))
                    )
                elif action.retain is not None:
                    retained[name] = Retained(
                        await self._count(conn, name, owned), action.retain.reason
                    )
                elif action.keep is not None:
                    retained[name] = Retained(await self._count(conn, name, owned), action.keep)
                for update in action.update:
                    scope = sa.and_(
                        owned, self._where(name, update.where), self._not_yet(name, update.set)
                    )
                    key = f"{name} (updated)"
                    deleted[key] = deleted.get(key, 0) + await self._count(conn, name, scope)
        return PurgeResult(deleted=deleted, retained=retained)

    async def purge(self, subject: Subject) -> PurgeResult:
        if not self._root_ids(subject):
            return PurgeResult()
        deleted: dict[str, int] = {}
        retained: dict[str, Retained] = {}
        async with _errors():
            for name, _, action, owned in self._steps(subject):
                if action.delete:
                    where = self._where(name, action.where)
                    deleted[name] = await self._delete(
                        name, sa.and_(owned, where), subject.progress
                    )
                    if action.detach_others:
                        nulls = dict.fromkeys(action.detach_others)
                        await self._update(name, sa.and_(owned, sa.not_(where)), nulls)
                elif action.retain is not None:
                    async with self._engine.connect() as conn:
                        count = await self._count(conn, name, owned)
                    if action.retain.detach:
                        await self._update(name, owned, dict.fromkeys(action.retain.detach))
                    retained[name] = Retained(count, action.retain.reason)
                elif action.keep is not None:
                    async with self._engine.connect() as conn:
                        retained[name] = Retained(await self._count(conn, name, owned), action.keep)
                for update in action.update:
                    scope = sa.and_(owned, self._where(name, update.where))
                    key = f"{name} (updated)"
                    updated = await self._update(name, scope, update.set, subject.progress, key)
                    deleted[key] = deleted.get(key, 0) + updated
        return PurgeResult(deleted=deleted, retained=retained)

    async def verify(self, subject: Subject) -> dict[str, int]:
        if not self._root_ids(subject):
            return {}
        left: dict[str, int] = {}
        async with _errors(), self._engine.connect() as conn:
            for name, _, action, owned in self._steps(subject):
                checks: list[Where] = []
                if action.delete:
                    where = self._where(name, action.where)
                    checks.append(sa.and_(owned, where))
                    if action.detach_others:
                        checks.append(sa.and_(owned, sa.not_(where)))
                elif action.retain is not None and action.retain.detach:
                    checks.append(owned)
                for update in action.update:
                    checks.append(
                        sa.and_(
                            owned, self._where(name, update.where), self._not_yet(name, update.set)
                        )
                    )
                if checks:
                    left[name] = await self._count(conn, name, sa.or_(*checks))
        return left

    async def ping(self) -> None:
        async with _errors(), self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def table_names(self) -> set[str]:
        async with _errors(), self._engine.connect() as conn:
            names = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        return set(names)


# Server states that pass: connection exceptions (08), insufficient resources (53, e.g.
# too many connections), shutting down / starting up (57P01-57P03), serialization
# failures and deadlocks (40001, 40P01), a lock not available (55P03).
_TRANSIENT_CLASSES = ("08", "53", "57P")
_TRANSIENT_STATES = frozenset({"40001", "40P01", "55P03"})


def transient_sqlstate(sqlstate: str | None) -> bool:
    if not sqlstate:
        return False
    return sqlstate.startswith(_TRANSIENT_CLASSES) or sqlstate in _TRANSIENT_STATES


class _errors:
    """Map driver errors to outcomes, without row values in the message."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError):
            raise PurgeRetriable(f"PostgreSQL unreachable ({type(exc).__name__})") from exc
        if isinstance(exc, IntegrityError):
            constraint = getattr(getattr(exc, "orig", None), "constraint_name", None)
            raise PurgeFailed(
                f"integrity error ({constraint or 'unknown constraint'}): "
                "a table refers to the subject that the data map does not know of"
            ) from exc
        if isinstance(exc, DBAPIError):
            if exc.connection_invalidated:
                raise PurgeRetriable("PostgreSQL connection lost") from exc
            sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
            if transient_sqlstate(sqlstate):
                raise PurgeRetriable(f"PostgreSQL unavailable (SQLSTATE {sqlstate})") from exc
            raise PurgeFailed(f"PostgreSQL error (SQLSTATE {sqlstate or 'unknown'})") from exc
