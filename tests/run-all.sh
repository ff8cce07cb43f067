#!/usr/bin/env bash
# Runs every cachestack test on this machine: formatting, lints, documentation links, the dependency policy
# (cargo-deny), unit, property and integration tests, doctests, UI (trybuild) tests and the
# examples. It first makes sure the servers the tests need
# are installed and running on loopback, installing them from Debian's packages when missing.
#
# Usage: bash tests/run-all.sh          (from the repository root)
#
# In CI (CI=true) a test whose server is missing fails; elsewhere it is skipped with a loud
# message. Extra server instances this script starts are stopped when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

CLEANUP=()
cleanup() {
  for cmd in "${CLEANUP[@]:-}"; do
    [ -n "$cmd" ] && eval "$cmd" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

# shellcheck source=tests/servers.sh
source tests/servers.sh
ensure_servers

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

log "cargo doc (warnings are errors: broken or private intra-doc links)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps -q

log "cargo deny: licences, bans, sources (deny.toml; offline)"
if ! command -v cargo-deny >/dev/null 2>&1; then
  # Built from crates.io: about 4 minutes on a 2-core machine (no prebuilt binary can be fetched).
  log "installing cargo-deny"
  cargo install --locked cargo-deny@0.20.2
fi
# The check reads every crate's manifest, for every platform: fetch them first (crates.io only),
# then check without the network (advisories need it and are left out).
cargo fetch --locked
cargo deny --offline check licenses bans sources

log "cargo test (workspace, all features)"
cargo test --workspace --all-features --no-fail-fast

log "quickstart example"
cargo run -q -p cachestack-examples --all-features --example quickstart

log "resilience example"
cargo run -q -p cachestack-examples --all-features --example resilience

for backend in redis postgres memcached; do
  log "$backend example"
  cargo run -q -p cachestack-examples --all-features --example "$backend"
done

log "axum_service example: a web service over mem | redis, driven by a real HTTP client (--check)"
cargo run -q -p cachestack-examples --all-features --example axum_service -- --check

log "backplane example (two processes, Redis)"
cargo run -q -p cachestack-examples --all-features --example backplane

log "object_store example (S3: the moto server started above)"
cargo run -q -p cachestack-examples --all-features --example object_store

log "all tests passed"
