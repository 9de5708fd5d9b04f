"""The worker's hot statements as driver SQL (asyncpg) on PostgreSQL, inside the session's
own transaction.

A fenced transaction (``Leases.transition``) runs a handful of small statements per
request: the fence, task and request updates, the event rows. Through SQLAlchemy each
costs more CPU in its execution machinery (context, result, adaption) than in the
driver. :func:`begin` starts the session's transaction at once and lends its asyncpg
connection to those statements (:func:`of`), so they run in the same transaction as
whatever else the block does through the session (reads, receipts) and commit or roll
back with it. Their SQL is the SQLAlchemy statement compiled once per shape for the
asyncpg dialect, with the same bind processing (JSON serialised as SQLAlchemy would).
SQLite (and a session that did not :func:`begin`) takes the SQLAlchemy path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import instance_dict, manager_of_class

_KEY = "driver_connection"
DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


async def begin(session: AsyncSession) -> None:
    """Begin the session's transaction now; on PostgreSQL lend its asyncpg connection to
    the hot statements until :func:`end`."""
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        return
    pooled = await connection.get_raw_connection()
    adapted: Any = pooled.dbapi_connection
    # SQLAlchemy's asyncpg adapter begins lazily, on its first statement: begin here, as
    # it would (its own transaction object, so that its commit and rollback end it).
    if adapted._transaction is None:
        await adapted._start_transaction()
    session.info[_KEY] = pooled.driver_connection


def end(session: AsyncSession) -> None:
    """The transaction is over: the connection goes back to the pool with the session."""
    session.info.pop(_KEY, None)


def of(session: AsyncSession) -> Any:
    """The asyncpg connection lent to the session's transaction, or None."""
    return session.info.get(_KEY)


@dataclass(frozen=True)
class Compiled:
    """A statement as asyncpg SQL, and how to make its positional arguments."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    # Columns the statement sets itself when not given (``onupdate``, an insert's default).
    defaults: Mapping[str, Callable[[], Any]]

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, process in zip(self.names, self.processors, strict=True):
            value = values[name] if name in values else self.defaults[name]()
            out.append(process(value) if process is not None else value)
        return out


_CACHE: dict[tuple[int, tuple[str, ...] | None], Compiled] = {}


def compiled(statement: sa.Executable, column_keys: Iterable[str] | None = None) -> Compiled:
    """``statement`` compiled for asyncpg (with the SET or VALUES clause of
    ``column_keys``), once per statement and shape."""
    keys = tuple(column_keys) if column_keys is not None else None
    key = (id(statement), keys)
    found = _CACHE.get(key)
    if found is None:
        compiled_ = statement.compile(  # type: ignore[attr-defined]
            dialect=DIALECT, column_keys=list(keys) if keys is not None else None
        )
        assert "POSTCOMPILE" not in str(compiled_), "an IN list: use = ANY(array)"
        names = tuple(compiled_.positiontup or ())
        processors = tuple(
            compiled_.binds[name].type.dialect_impl(DIALECT).bind_processor(DIALECT)
            for name in names
        )
        found = _CACHE[key] = Compiled(
            str(compiled_),
            names,
            processors,
            _defaults(statement, names, keys or (), compiled_.binds),
        )
    return found


def _defaults(
    statement: sa.Executable,
    names: Sequence[str],
    given: Sequence[str],
    binds: Mapping[str, sa.BindParameter[Any]],
) -> dict[str, Callable[[], Any]]:
    """How to make the value of each column the statement sets that is not given: the
    column's ``onupdate`` (an UPDATE) or ``default`` (an INSERT), as SQLAlchemy would."""
    table = getattr(statement, "table", None)
    update = isinstance(statement, sa.Update)
    out: dict[str, Callable[[], Any]] = {}
    for name in names:
        bind = binds[name]
        if not bind.required and bind.value is not None:  # a value of the statement's own
            out[name] = partial(lambda value: value, bind.value)
            continue
        if name in given or table is None or name not in table.c:
            continue
        column = table.c[name]
        default = column.onupdate if update else column.default
        if default is None:
            continue
        if default.is_callable:
            out[name] = partial(default.arg, None)
        elif default.is_scalar:
            out[name] = partial(lambda value: value, default.arg)
    return out


async def fetchrow(driver: Any, statement: Compiled, values: Mapping[str, Any]) -> Any:
    return await driver.fetchrow(statement.sql, *statement.args(values))


async def execute(driver: Any, statement: Compiled, values: Mapping[str, Any]) -> int:
    """Run a statement; the rows it changed."""
    status: str = await driver.execute(statement.sql, *statement.args(values))
    count = status.rpartition(" ")[2]
    return int(count) if count.isdigit() else 0


async def executemany(driver: Any, statement: Compiled, rows: Sequence[Mapping[str, Any]]) -> None:
    await driver.executemany(statement.sql, [statement.args(row) for row in rows])


@dataclass(frozen=True)
class Loader:
    """Rows of a join of ``parent`` and ``child`` (each with all of its columns, the
    child's nullable: an outer join) made into mapped objects as the ORM would load them
    (column values through SQLAlchemy's result processing), without its loading
    machinery: transient objects, read only, ``collection`` holding the children."""

    parent: type[Any]
    child: type[Any]
    collection: str
    parent_columns: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    child_columns: tuple[tuple[str, Callable[[Any], Any] | None], ...]

    @classmethod
    def of(cls, parent: type[Any], child: type[Any], collection: str) -> Loader:
        def columns(mapped: type[Any]) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
            table = sa.inspect(mapped).local_table
            return tuple(
                (
                    column.key,
                    column.type.dialect_impl(DIALECT).result_processor(DIALECT, None),
                )
                for column in table.columns
            )

        for mapped in (parent, child):
            first = next(iter(sa.inspect(mapped).local_table.columns))
            assert first.primary_key, f"{mapped.__name__}: the first column is not its key"
        return cls(parent, child, collection, columns(parent), columns(child))

    def select(self) -> sa.Select[Any]:
        """All the columns of both, in the order :meth:`load` reads them."""
        parent = sa.inspect(self.parent).local_table
        child = sa.inspect(self.child).local_table
        return sa.select(*parent.columns, *child.columns)

    def load(self, rows: Sequence[Any]) -> list[Any]:
        """The parents of ``rows`` (in their order), each with its children (rows of one
        parent next to each other, the children in the order wanted)."""
        split = len(self.parent_columns)
        parents: list[Any] = []
        current_id: Any = None
        children: list[Any] = []
        for row in rows:
            if not parents or row[0] != current_id:
                children = []
                parent = _instance(self.parent, self.parent_columns, row, 0)
                instance_dict(parent)[self.collection] = children
                parents.append(parent)
                current_id = row[0]
            if row[split] is not None:
                children.append(_instance(self.child, self.child_columns, row, split))
        return parents


def _instance(
    mapped: type[Any],
    columns: tuple[tuple[str, Callable[[Any], Any] | None], ...],
    row: Any,
    start: int,
) -> Any:
    obj = manager_of_class(mapped).new_instance()
    values = instance_dict(obj)
    for offset, (key, process) in enumerate(columns):
        value = row[start + offset]
        values[key] = process(value) if process is not None and value is not None else value
    return obj


async def fetch(driver: Any, statement: Compiled, values: Mapping[str, Any]) -> list[Any]:
    rows: list[Any] = await driver.fetch(statement.sql, *statement.args(values))
    return rows
