"""Test harness: real PostgreSQL, FerretDB and moto servers for the test suite."""

from .services import (
    FerretDBServer,
    FreshPgDatabase,
    LocalPostgres,
    MotoServer,
    PgDatabase,
    PostgresServer,
    ServiceError,
    close_all,
    free_port,
    start_ferretdb,
    start_moto,
    start_postgres,
    to_asyncpg_url,
    to_plain_url,
)

__all__ = [
    "FerretDBServer",
    "FreshPgDatabase",
    "LocalPostgres",
    "MotoServer",
    "PgDatabase",
    "PostgresServer",
    "ServiceError",
    "close_all",
    "free_port",
    "start_ferretdb",
    "start_moto",
    "start_postgres",
    "to_asyncpg_url",
    "to_plain_url",
]
