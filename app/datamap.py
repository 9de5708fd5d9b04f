"""The data map: where the subject's data lives in each store, and what each kind does to it.

The bundled map (``app/soundops_datamap.yaml``) describes the SoundOps stores;
``DELETION_DATA_MAP`` points to another. It is validated at start-up: a map
that names an unknown table, a cycle of owners, or a kind without an action for
a table it reaches stops the service. Purgers read every table, column,
collection and bucket name from here; none is written in purger code.

Vocabulary:

- **Resolution**: what a subject resolves to before anything is purged — a set
  of ``tenant_ids``, ``account_ids`` (rows of the map's account table, the
  *connections*), ``ig_user_ids`` (their Instagram accounts), and of those the
  ``shared_ig_user_ids`` and ``subject_ig_user_ids`` (see :class:`Resolution`).
  Every store's selection is written in those terms.
- **Reach** of a ``meta_data`` identity (``Identity.reaches``): ``connections``
  reaches the account-table rows it matches and everything through their ids;
  ``instagram_account`` means the identity *is* the Instagram account, so it
  reaches every connection of it (any tenant's) and data keyed by its id that
  outlived its connection row. Data keyed only by the Instagram account (a
  ``{ig_user_id}`` prefix) is kept, and reported retained, while a connection
  that the request does not reach still has that account.
- **PostgreSQL tables** have ``owners``: columns that point at the tenant
  table or at another mapped table. A kind starts from a *root* table (the
  tenants for ``account``, the accounts otherwise) and reaches every table
  whose owners lead there; for each such table the kind says ``delete``,
  ``retain`` (with a legal reason, detaching columns), or ``update``.
"""

from __future__ import annotations

import re
from functools import cached_property
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.models import RequestKind

BUNDLED_MAP = Path(__file__).with_name("soundops_datamap.yaml")

Ident = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]
ResolvedSet = Literal[
    "tenant_ids", "account_ids", "ig_user_ids", "subject_ig_user_ids", "third_party_usernames"
]
Reach = Literal["connections", "instagram_account"]
SHARED_REASON = (
    "shared with another SoundOps connection of this Instagram account that the request "
    "does not reach; it expires under the 30-day retention rule"
)
Scalar = str | int | float | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Owner(_Strict):
    """``column`` holds the key of a row of ``references`` (a mapped table)."""

    column: Ident
    references: Ident


class Retain(_Strict):
    reason: Annotated[str, StringConstraints(min_length=3)]
    # Columns set to NULL so the kept rows no longer point at the subject.
    detach: list[Ident] = Field(default_factory=list)


class Update(_Strict):
    set: dict[Ident, Scalar | Literal["now()"]]
    where: dict[Ident, Scalar] = Field(default_factory=dict)
    # Tokens the Meta step still needs: left to it (it destroys them after the revoke, or
    # at DELETION_REVOKE_DEADLINE) whenever it runs; made here only when it does not.
    held_for_revoke: bool = False


class TableAction(_Strict):
    """What a kind does to the rows of a table that it reaches. Exactly one of them."""

    delete: bool = False
    where: dict[Ident, Scalar] = Field(default_factory=dict)  # only rows matching these too
    detach_others: list[Ident] = Field(default_factory=list)  # other reached rows: set NULL
    retain: Retain | None = None
    update: list[Update] = Field(default_factory=list)
    keep: str | None = None  # untouched on purpose, with the reason

    @model_validator(mode="after")
    def _one(self) -> TableAction:
        chosen = [
            bool(self.delete),
            self.retain is not None,
            bool(self.update),
            self.keep is not None,
        ]
        if sum(chosen) != 1:
            raise ValueError("a table action is exactly one of delete, retain, update, keep")
        return self


def _action(value: Any) -> Any:
    if value == "delete":
        return {"delete": True}
    return value


class Table(_Strict):
    key: Ident = "id"
    owners: list[Owner] = Field(default_factory=list)
    kinds: dict[RequestKind, Annotated[TableAction, Field()]] = Field(default_factory=dict)
    # A table that holds no personal data of anyone the service deletes: why.
    unrelated: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("kinds"), dict):
            data = {**data, "kinds": {k: _action(v) for k, v in data["kinds"].items()}}
        return data


class Match(_Strict):
    """Which resolved set a field of a document must be in."""

    field: Ident
    within: ResolvedSet
    # Documents this match selects are about the subject as a third party (what that
    # person wrote to someone else's account): counted apart, as ``as_third_party``.
    third_party: bool = False


class Collection(_Strict):
    kinds: dict[RequestKind, list[Match]] = Field(default_factory=dict)
    unrelated: str | None = None


_TEMPLATE = re.compile(r"\{(tenant_id|ig_user_id|account_id)\}")
_SET_OF = {"tenant_id": "tenant_ids", "ig_user_id": "ig_user_ids", "account_id": "account_ids"}


class Bucket(_Strict):
    versioned: bool = False
    kinds: dict[RequestKind, list[str]] = Field(default_factory=dict)
    unrelated: str | None = None
    # Why an ``{ig_user_id}`` prefix of a shared Instagram account is kept (``expand``).
    shared: Annotated[str, StringConstraints(min_length=3)] = SHARED_REASON

    @model_validator(mode="after")
    def _templates(self) -> Bucket:
        for templates in self.kinds.values():
            for template in templates:
                names = _TEMPLATE.findall(template)
                if len(names) != 1 or not template.endswith("/"):
                    raise ValueError(
                        f"prefix {template!r}: one of {{tenant_id}}, {{ig_user_id}}, "
                        "{account_id} and a trailing '/'"
                    )
        return self


def expand(template: str, resolution: Resolution) -> tuple[list[str], list[str]]:
    """The prefixes a template stands for, given a resolution: ``(reached, shared)``.

    An ``{ig_user_id}`` prefix is keyed by the Instagram account, not by a connection:
    for an Instagram account that a connection outside the request still has
    (``shared_ig_user_ids``) it is not reached but kept (``shared``)."""
    (name,) = _TEMPLATE.findall(template)
    values: list[str] = sorted(set(getattr(resolution, _SET_OF[name])))
    shared = set(resolution.shared_ig_user_ids) if name == "ig_user_id" else set()
    prefixes = {value: template.replace("{" + name + "}", value) for value in values}
    return (
        [prefix for value, prefix in prefixes.items() if value not in shared],
        [prefix for value, prefix in prefixes.items() if value in shared],
    )


class Identity(_Strict):
    """How a subject identity finds rows: in ``table``, ``column`` equals the value.

    ``reaches`` (identities of the account table): whom a request by this identity
    reaches. ``connections``: the rows it matches, and everything through their ids
    (never another connection of the same Instagram account). ``instagram_account``:
    the identity is the Instagram account itself, so also every other connection of
    it, any tenant's, and data keyed by its id whose connection row is gone."""

    table: Ident
    column: Ident
    casefold: bool = False
    type: Literal["text", "uuid"] = "text"
    reaches: Reach = "connections"


class PostgresMap(_Strict):
    tenant_table: Ident
    account_table: Ident
    account_tenant_column: Ident
    account_ig_user_column: Ident
    identities: dict[Ident, Identity]
    tables: dict[Ident, Table]

    @model_validator(mode="after")
    def _consistent(self) -> PostgresMap:
        for name, table in self.tables.items():
            for owner in table.owners:
                if owner.references not in self.tables:
                    raise ValueError(
                        f"{name}.{owner.column} references unmapped {owner.references}"
                    )
        for name in (self.tenant_table, self.account_table):
            if name not in self.tables:
                raise ValueError(f"{name} is not a mapped table")
        for name, identity in self.identities.items():
            if identity.table not in self.tables:
                raise ValueError(f"identity table {identity.table} is not mapped")
            if identity.reaches == "instagram_account" and identity.table != self.account_table:
                raise ValueError(f"identity {name} reaches an Instagram account: not in that table")
        try:
            self.delete_order  # noqa: B018 - validates the owner graph
        except CycleError as exc:
            raise ValueError(f"owner cycle between tables: {exc.args[1]}") from exc
        for kind in RequestKind:
            for name in self.reached(kind):
                if kind not in self.tables[name].kinds:
                    raise ValueError(f"{kind} reaches table {name} but says nothing about it")
        return self

    @cached_property
    def delete_order(self) -> list[str]:
        """Children first, the tenant table last: a safe order for deletes."""
        graph = {name: {o.references for o in t.owners} - {name} for name, t in self.tables.items()}
        parents_first = list(TopologicalSorter(graph).static_order())
        return list(reversed(parents_first))

    def root(self, kind: RequestKind) -> str:
        return self.tenant_table if kind is RequestKind.account else self.account_table

    def reached(self, kind: RequestKind) -> list[str]:
        """Tables whose rows can belong to a kind's root, in delete order."""
        root = self.root(kind)
        reached = {root}
        changed = True
        while changed:
            changed = False
            for name, table in self.tables.items():
                if name not in reached and any(o.references in reached for o in table.owners):
                    reached.add(name)
                    changed = True
        return [name for name in self.delete_order if name in reached]


class MongoMap(_Strict):
    collections: dict[Ident, Collection]


class S3Map(_Strict):
    buckets: dict[
        Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")], Bucket
    ]


class MetaGraphColumns(_Strict):
    login_family: Ident
    ig_user_id: Ident
    facebook_user_id: Ident
    facebook_page_id: Ident
    user_token: Ident
    page_token: Ident
    status: Ident
    connected_at: Ident


class MetaGraphMap(_Strict):
    """Columns of the account table that the Graph API step reads."""

    columns: MetaGraphColumns
    connected: str


class DataMap(_Strict):
    version: Annotated[str, StringConstraints(min_length=1)]
    postgres: PostgresMap
    mongodb: MongoMap
    s3: S3Map
    meta_graph: MetaGraphMap


class Resolution(BaseModel):
    """What a subject resolved to. Raw ids: kept only until the request is minimised."""

    model_config = ConfigDict(extra="forbid")

    tenant_ids: list[str] = Field(default_factory=list)
    # The connections reached: rows of the account table.
    account_ids: list[str] = Field(default_factory=list)
    # Their Instagram accounts (and an ig_user_id named by the request).
    ig_user_ids: list[str] = Field(default_factory=list)
    # Of ig_user_ids, those that a connection outside account_ids still has: what is keyed
    # only by the Instagram account is kept for them.
    shared_ig_user_ids: list[str] = Field(default_factory=list)
    # The Instagram accounts that ARE the subject (an identity that ``reaches`` the
    # Instagram account): their data is reached by this id wherever it is.
    subject_ig_user_ids: list[str] = Field(default_factory=list)
    # Usernames (normalised, and as given when that differs) whose writings the request
    # reaches in every tenant: only a ``meta_data`` request by ``ig_username``.
    third_party_usernames: list[str] = Field(default_factory=list)
    # Where the confirmation goes after an account's deletion (read before it is deleted).
    owner_emails: list[str] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.tenant_ids
            or self.account_ids
            or self.ig_user_ids
            or self.subject_ig_user_ids
            or self.third_party_usernames
        )


class Selection(BaseModel):
    """What a confirmation or a reviewer saw: the tenants and ``instagram_accounts`` rows a
    request may reach (ids). A request carrying one is never widened at run time: its
    resolution is restricted to these rows (``account``: the tenants; ``meta_data``: the
    accounts)."""

    model_config = ConfigDict(extra="forbid")

    tenant_ids: list[str] = Field(default_factory=list)
    account_ids: list[str] = Field(default_factory=list)


class DataMapError(ValueError):
    pass


def load_datamap(path: Path | None = None) -> DataMap:
    source = path or BUNDLED_MAP
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataMapError(f"cannot read the data map {source}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise DataMapError(f"the data map {source} is not valid YAML: {exc}") from exc
    try:
        return DataMap.model_validate(raw)
    except ValueError as exc:
        raise DataMapError(f"the data map {source} is invalid: {exc}") from exc
