#!/usr/bin/env bash
# The project's one test command, for a fresh machine as for a developer's:
#   bash scripts/test.sh [pytest args...]
# 1. .venv from requirements/test.lock, then the project (scripts/bootstrap.sh)
# 2. PostgreSQL 15 server binaries and Dovecot (apt-get when missing and we are root)
# 3. FerretDB built into .cache/bin/ferretdb (scripts/build_ferretdb.sh); the tests run it
#    on its PostgreSQL backend, in a PostgreSQL 15 cluster of its own
# 4. ruff check, ruff format --check, mypy, lint-imports   (skipped with SKIP_LINT=1)
# 5. pytest "$@"  (the tests start PostgreSQL, FerretDB, moto and Dovecot themselves), on
#    one worker process per core, at most 4 (pytest-xdist; TEST_WORKERS=N to choose, or pass -n)
# Exits non-zero when any step fails; pytest collecting no test is a failure.
# TEST_POSTGRES_URL / TEST_MONGODB_URL / TEST_S3_ENDPOINT_URL point the tests
# at external servers instead (then the matching local setup is skipped; PostgreSQL's
# binaries are still needed for FerretDB's own cluster unless TEST_MONGODB_URL is set).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PG_BINDIR="${PG_BINDIR:-/usr/lib/postgresql/15/bin}"
export PG_BINDIR
DOVECOT_BIN="${DOVECOT_BIN:-$(command -v dovecot || echo /usr/sbin/dovecot)}"

log() { echo "==> $*"; }
die() { echo "==> ERROR: $*" >&2; exit 1; }

total_start=$SECONDS

log "python environment"
bash "$ROOT/scripts/bootstrap.sh"
export PATH="$VENV/bin:$PATH"

# FerretDB runs on PostgreSQL too: local binaries unless both servers are external.
if [[ -z "${TEST_POSTGRES_URL:-}" || -z "${TEST_MONGODB_URL:-}" ]]; then
    if [[ ! -x "$PG_BINDIR/initdb" ]]; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "PostgreSQL 15 server binaries missing in $PG_BINDIR: installing with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq postgresql-15 >/dev/null || apt-get install -y -qq postgresql >/dev/null
        fi
        [[ -x "$PG_BINDIR/initdb" ]] || die "PostgreSQL 15 server binaries not found in $PG_BINDIR \
(install the 'postgresql-15' package, set PG_BINDIR, or set TEST_POSTGRES_URL)"
    fi
    log "PostgreSQL: $("$PG_BINDIR/postgres" --version)"
fi

if [[ ! -x "$DOVECOT_BIN" ]]; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "Dovecot missing: installing dovecot-imapd with apt-get (its own service is not started)"
        export DEBIAN_FRONTEND=noninteractive
        # The tests run their own Dovecot on a free port; the package's service must not
        # start (and keep port 143): a policy-rc.d denies it, unless the machine has one.
        policy=/usr/sbin/policy-rc.d
        added_policy=0
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
            trap 'rm -f "$policy"' EXIT
        fi
        install_rc=0
        apt-get update -qq && apt-get install -y -qq dovecot-imapd >/dev/null || install_rc=$?
        if ((added_policy)); then
            rm -f "$policy"
            trap - EXIT
        fi
        ((install_rc == 0)) || echo "==> apt-get install dovecot-imapd failed (exit $install_rc)" >&2
        DOVECOT_BIN="$(command -v dovecot || echo /usr/sbin/dovecot)"
    fi
    [[ -x "$DOVECOT_BIN" ]] || die "Dovecot not found at $DOVECOT_BIN (install the 'dovecot-imapd' \
package, or set DOVECOT_BIN)"
fi
export DOVECOT_BIN
log "Dovecot: $("$DOVECOT_BIN" --version)"

# Node.js runs the README's receipt verification in another language (a test runs it as is).
if ! command -v node >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "Node.js missing: installing nodejs with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq nodejs >/dev/null
    fi
    command -v node >/dev/null 2>&1 || die "Node.js not found (install the 'nodejs' package)"
fi
log "Node.js: $(node --version)"

# The console's browser tests drive Debian's Chromium through its chromedriver (Selenium,
# pointed at both; nothing is downloaded at run time).
CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
CHROMEDRIVER_BIN="${CHROMEDRIVER_BIN:-/usr/bin/chromedriver}"
if [[ ! -x "$CHROMIUM_BIN" || ! -x "$CHROMEDRIVER_BIN" ]]; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "Chromium missing: installing chromium and chromium-driver with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
    [[ -x "$CHROMIUM_BIN" && -x "$CHROMEDRIVER_BIN" ]] || die "Chromium or chromedriver not \
found (install the 'chromium' and 'chromium-driver' packages, or set CHROMIUM_BIN and CHROMEDRIVER_BIN)"
fi
export CHROMIUM_BIN CHROMEDRIVER_BIN
log "Chromium: $("$CHROMEDRIVER_BIN" --version | head -1)"

if [[ -z "${TEST_MONGODB_URL:-}" ]]; then
    if [[ -n "${FERRETDB_BIN:-}" ]]; then
        [[ -x "$FERRETDB_BIN" ]] || die "FERRETDB_BIN=$FERRETDB_BIN is not an executable file"
        log "FerretDB: using FERRETDB_BIN=$FERRETDB_BIN"
    else
        log "FerretDB"
        bash "$ROOT/scripts/build_ferretdb.sh"
        export FERRETDB_BIN="$ROOT/.cache/bin/ferretdb"
    fi
fi

failed=()
if [[ "${SKIP_LINT:-0}" == 1 ]]; then
    log "SKIP_LINT=1: skipping ruff, mypy and lint-imports"
else
    log "ruff check ."
    "$VENV/bin/ruff" check . || failed+=("ruff check")
    log "ruff format --check ."
    "$VENV/bin/ruff" format --check . || failed+=("ruff format")
    log "mypy"
    "$VENV/bin/mypy" || failed+=("mypy")
    log "lint-imports (the layering contracts in pyproject.toml)"
    "$VENV/bin/lint-imports" || failed+=("lint-imports")
fi

# One worker process per core, each with its own servers (the suite is CPU-bound in one
# process: 1,311 s on one worker, 791 s on two, on this 2-core machine). Tests are handed
# out one by one and idle workers take over queued ones (worksteal), so the long tests do
# not line up behind each other. A later -n N among the arguments wins; TEST_WORKERS=0
# (or -n 0) runs the tests in the pytest process itself (for pdb).
# At most 4 by default: each worker runs its own servers (two PostgreSQL clusters among them).
cores="$(nproc 2>/dev/null || echo 2)"
workers=(-n "${TEST_WORKERS:-$((cores < 4 ? cores : 4))}" --dist worksteal)
log "pytest ${workers[*]} $*"
set +e
"$VENV/bin/pytest" "${workers[@]}" "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
    echo "==> ERROR: pytest collected no tests (exit 5); treating that as a failure" >&2
    failed+=("pytest (no tests)")
elif [[ $rc != 0 ]]; then
    failed+=("pytest (exit $rc)")
fi

if ((${#failed[@]})); then
    log "FAILED: ${failed[*]} ($((SECONDS - total_start)) s)"
    exit 1
fi
log "all checks passed ($((SECONDS - total_start)) s)"
