#!/bin/sh
# docker-compose.yml: the PostgreSQL image runs this once, on an empty data directory.
# The tracking database (POSTGRES_DB=deletion) is made by the image and migrated by the
# `migrate` service; this adds the SoundOps main database with its schema (the copy the
# tests use, tests/data/soundops_schema.sql), empty.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -c "CREATE DATABASE soundops OWNER \"$POSTGRES_USER\""
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname soundops -f /soundops/schema.sql
