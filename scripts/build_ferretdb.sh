#!/usr/bin/env bash
# Build FerretDB (the MongoDB wire protocol; the tests run it on PostgreSQL) into
# .cache/bin/ferretdb under the repository root. Idempotent: does nothing when
# the cached binary already answers --version.
#
# Plain `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` builds a
# binary that panics at start (build/version/version.txt is generated in
# FerretDB's own repository and is missing from the module download), so this
# copies the module source, writes that file, and builds from the copy.
# See shared/spec/test-services.md, "Building FerretDB".
set -euo pipefail

FERRETDB_VERSION="v1.24.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$ROOT/.cache/bin"
TARGET="$BIN_DIR/ferretdb"

log() { echo "[build_ferretdb] $*"; }
die() { echo "[build_ferretdb] ERROR: $*" >&2; exit 1; }

if [[ -x "$TARGET" ]] && version_out="$("$TARGET" --version 2>/dev/null)" \
    && grep -q "version: $FERRETDB_VERSION" <<<"$version_out"; then
    log "cached $TARGET ($FERRETDB_VERSION) is fine, nothing to build"
    exit 0
fi

GO="$(command -v go || true)"
if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
fi
[[ -n "$GO" ]] || die "the Go toolchain is required to build FerretDB $FERRETDB_VERSION for the tests, \
but 'go' is not on PATH (nor at /usr/local/go/bin/go). Install Go (https://go.dev/dl/) or set \
TEST_MONGODB_URL to an existing MongoDB-compatible server."

# Never try to download another Go toolchain; never stamp VCS info (the copy
# is not a repository, and the repo around .cache may have no commits).
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"

BUILD="$(mktemp -d "${TMPDIR:-/tmp}/ferretdb-build.XXXXXX")"
trap 'chmod -R u+w "$BUILD" 2>/dev/null || true; rm -rf "$BUILD"' EXIT

log "building FerretDB $FERRETDB_VERSION with $("$GO" version) (about 80 s cold, seconds when Go's caches are warm)"
start=$SECONDS

# `go mod download` of a module@version works outside any module; run it from
# the empty build dir so no surrounding go.mod interferes.
src="$(cd "$BUILD" && "$GO" mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
    | python3 -c 'import sys, json; d = json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error") or "no Dir in go mod download output"))')" \
    || die "go mod download github.com/FerretDB/FerretDB@$FERRETDB_VERSION failed"
[[ -d "$src" ]] || die "module source directory '$src' not found"

cp -r "$src" "$BUILD/ferretdb-src"
chmod -R u+w "$BUILD/ferretdb-src"
echo "$FERRETDB_VERSION" > "$BUILD/ferretdb-src/build/version/version.txt"

mkdir -p "$BIN_DIR"
(cd "$BUILD/ferretdb-src" && "$GO" build -o "$BUILD/ferretdb" ./cmd/ferretdb) \
    || die "go build of FerretDB $FERRETDB_VERSION failed (see the output above)"

# The output first, then the match: `ferretdb --version | grep -q` under pipefail fails
# whenever grep exits at its match before ferretdb has written everything (SIGPIPE).
built_version="$("$BUILD/ferretdb" --version 2>&1 || true)"
grep -q "version: $FERRETDB_VERSION" <<<"$built_version" \
    || die "the freshly built binary does not report $FERRETDB_VERSION: $built_version"

mv -f "$BUILD/ferretdb" "$TARGET"
log "built $TARGET in $((SECONDS - start)) s"
