"""The typed change sets name columns of their tables, with the columns' own types."""

from __future__ import annotations

import typing

import pytest
import sqlalchemy as sa

from app import repository
from app.models import Base, DeletionRequest, DeletionTask, MetaDeauthorization


@pytest.mark.parametrize(
    ("changes", "model"),
    [
        (repository.RequestChanges, DeletionRequest),
        (repository.TaskChanges, DeletionTask),
        (repository.DeauthorizationChanges, MetaDeauthorization),
    ],
)
def test_every_change_is_a_column_of_its_table(changes: type, model: type[Base]) -> None:
    columns = {attr.key for attr in sa.inspect(model).column_attrs}
    assert set(typing.get_type_hints(changes)) <= columns


@pytest.mark.parametrize(
    ("changes", "model"),
    [
        (repository.RequestChanges, DeletionRequest),
        (repository.TaskChanges, DeletionTask),
        (repository.DeauthorizationChanges, MetaDeauthorization),
    ],
)
def test_a_nullable_change_is_a_nullable_column(changes: type, model: type[Base]) -> None:
    table = typing.cast(sa.Table, model.__table__)
    for name, hint in typing.get_type_hints(changes).items():
        may_be_none = type(None) in typing.get_args(hint)
        assert may_be_none == table.columns[name].nullable, name
