"""``datamap check``: compare the data map with the live stores.

Fails on anything the map neither deletes nor explicitly retains or marks
unrelated, so that a new table, column reference, collection or bucket in
SoundOps cannot silently escape deletion:

- PostgreSQL: a table the map does not know; a column the map names that does
  not exist; a foreign key from a mapped table to a mapped table that is not
  one of the map's owners (its rows would be left behind, or block a delete).
- MongoDB: a collection the map does not know.
- S3: a bucket the map does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.datamap import DataMap
from app.stores import Stores


@dataclass(frozen=True)
class Finding:
    store: str
    name: str
    problem: str


@dataclass(frozen=True)
class CheckReport:
    findings: list[Finding]
    checked: dict[str, int]
    skipped: list[str]

    @property
    def ok(self) -> bool:
        return not self.findings


def _inspect(connection: Connection) -> dict[str, Any]:
    inspector = sa.inspect(connection)
    tables = {}
    for name in inspector.get_table_names():
        tables[name] = {
            "columns": {c["name"] for c in inspector.get_columns(name)},
            "foreign_keys": [
                (tuple(fk["constrained_columns"]), fk["referred_table"])
                for fk in inspector.get_foreign_keys(name)
            ],
        }
    return tables


def _mapped_columns(datamap: DataMap, table: str) -> set[str]:
    entry = datamap.postgres.tables[table]
    columns = {entry.key} | {o.column for o in entry.owners}
    for action in entry.kinds.values():
        columns |= set(action.where) | set(action.detach_others)
        if action.retain is not None:
            columns |= set(action.retain.detach)
        for update in action.update:
            columns |= set(update.set) | set(update.where)
    for identity in datamap.postgres.identities.values():
        if identity.table == table:
            columns.add(identity.column)
    if table == datamap.postgres.account_table:
        columns |= set(datamap.meta_graph.columns.model_dump().values())
        columns |= {datamap.postgres.account_tenant_column, datamap.postgres.account_ig_user_column}
    return columns


async def check_postgres(datamap: DataMap, stores: Stores) -> list[Finding]:
    assert stores.target_engine is not None
    async with stores.target_engine.connect() as connection:
        live = await connection.run_sync(_inspect)
    findings: list[Finding] = []
    mapped = datamap.postgres.tables
    for name in sorted(set(live) - set(mapped)):
        findings.append(
            Finding(
                "postgres", name, "table is not in the data map: deleted, retained or unrelated?"
            )
        )
    for name in sorted(set(mapped) - set(live)):
        findings.append(Finding("postgres", name, "mapped table does not exist"))
    for name in sorted(set(mapped) & set(live)):
        missing = _mapped_columns(datamap, name) - live[name]["columns"]
        for column in sorted(missing):
            findings.append(Finding("postgres", f"{name}.{column}", "mapped column does not exist"))
        if mapped[name].unrelated:
            continue
        owners = {(o.column, o.references) for o in mapped[name].owners}
        for columns, referred in live[name]["foreign_keys"]:
            if referred not in mapped or mapped[referred].unrelated or referred == name:
                continue
            if len(columns) != 1 or (columns[0], referred) not in owners:
                findings.append(
                    Finding(
                        "postgres",
                        f"{name}.{','.join(columns)}",
                        f"foreign key to {referred} is not an owner in the data map",
                    )
                )
    return findings


async def check_mongodb(datamap: DataMap, stores: Stores, database: str) -> list[Finding]:
    assert stores.mongo is not None
    names = set(await stores.mongo[database].list_collection_names())
    names = {n for n in names if not n.startswith("system.")}
    return [
        Finding("mongodb", name, "collection is not in the data map")
        for name in sorted(names - set(datamap.mongodb.collections))
    ]


async def check_s3(datamap: DataMap, stores: Stores) -> list[Finding]:
    assert stores.s3 is not None
    response = await stores.s3.list_buckets()
    names = {b["Name"] for b in response.get("Buckets", [])}
    findings = [
        Finding("s3", name, "bucket is not in the data map")
        for name in sorted(names - set(datamap.s3.buckets))
    ]
    findings += [
        Finding("s3", name, "mapped bucket does not exist")
        for name in sorted(set(datamap.s3.buckets) - names)
    ]
    return findings


async def check(datamap: DataMap, stores: Stores, mongodb_database: str) -> CheckReport:
    findings: list[Finding] = []
    checked: dict[str, int] = {}
    skipped: list[str] = []
    if stores.target_engine is not None:
        findings += await check_postgres(datamap, stores)
        checked["postgres"] = len(datamap.postgres.tables)
    else:
        skipped.append("postgres")
    if stores.mongo is not None:
        findings += await check_mongodb(datamap, stores, mongodb_database)
        checked["mongodb"] = len(datamap.mongodb.collections)
    else:
        skipped.append("mongodb")
    if stores.s3 is not None:
        findings += await check_s3(datamap, stores)
        checked["s3"] = len(datamap.s3.buckets)
    else:
        skipped.append("s3")
    return CheckReport(findings, checked, skipped)
