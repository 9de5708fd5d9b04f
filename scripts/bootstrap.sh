#!/usr/bin/env bash
# Create (or reuse) .venv at the repository root and install into it exactly the
# pinned, hash-checked packages of requirements/test.lock (the runtime and test
# dependencies; `make lock` regenerates it from pyproject.toml), then the project
# itself, editable and without dependencies. Shared by scripts/test.sh (so CI) and
# `make run`.
#
# Reinstalls only when pyproject.toml, the lock (or the interpreter) changed since
# the last successful install: a stamp with their hash lives in .venv.
# Environment: PYTHON (interpreter that creates the venv, default python3),
# FORCE_INSTALL=1 (reinstall even when the stamp matches).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.soundops-install-stamp"
LOCK="$ROOT/requirements/test.lock"
PYTHON="${PYTHON:-python3}"

log() { echo "[bootstrap] $*"; }
die() { echo "[bootstrap] ERROR: $*" >&2; exit 1; }

[[ -f "$LOCK" ]] || die "$LOCK is missing; run 'make lock' (scripts/lock.sh)"
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; Python >= 3.11 is required"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$PYTHON" --version 2>&1) is too old; Python >= 3.11 is required (set PYTHON=...)"

# A venv whose interpreter no longer runs (moved repo, removed Python) is rebuilt.
if [[ -d "$VENV" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "existing .venv is broken, recreating it"
    rm -rf "$VENV"
fi
if [[ ! -d "$VENV" ]]; then
    log "creating .venv with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

want="$( { cat "$ROOT/pyproject.toml" "$LOCK"
           "$VENV/bin/python" -c 'import sys; print(sys.version)'; } \
    | sha256sum | cut -d' ' -f1)"
if [[ "${FORCE_INSTALL:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    log ".venv is up to date with pyproject.toml and requirements/test.lock"
    exit 0
fi

log "installing requirements/test.lock, then the project (editable, --no-deps) into .venv"
start=$SECONDS
rm -f "$STAMP"
# Hash-checked: a package missing from the lock, or whose archive changed, fails here.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
    -r "$LOCK"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$ROOT"
echo "$want" > "$STAMP"
log "installed in $((SECONDS - start)) s"
