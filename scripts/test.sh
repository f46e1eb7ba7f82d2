#!/usr/bin/env bash
# The whole gate: formatting, lints, unit tests, and the integration tests twice: against
# Debian's nats-server (2.9) and against the pinned current release installed by setup.sh; then,
# once, the compose deployment in real containers (tests/compose.rs; it skips without Docker,
# and fails where Docker is installed but cannot run it).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then export PATH="$HOME/.cargo/bin:$PATH"; fi
# A failed test's error message is the last thing it prints, not an anyhow backtrace after it
# (panics keep theirs through RUST_BACKTRACE).
export RUST_LIB_BACKTRACE=0

current=".tools/nats-server-2.15.1/nats-server"
if [ ! -x "$current" ]; then
  echo "missing $current: run scripts/setup.sh first" >&2
  exit 1
fi

# One nextest pass, then its slowest tests from the JUnit report (.config/nextest.toml), so that
# CI's log says where its minutes went; the pass's own status is returned.
run_pass() {
  local rc=0 junit="${CARGO_TARGET_DIR:-target}/nextest/default/junit.xml"
  rm -f "$junit"
  cargo nextest run --locked --no-fail-fast "$@" || rc=$?
  python3 scripts/slowest.py "$junit" 12 || true
  return "$rc"
}

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# No import loops between the modules of any crate (the layering docs/architecture.md draws).
python3 scripts/module-loops.py

echo "== tests against $(nats-server --version) (Debian)"
FFLEET_NATS_SERVER="$(command -v nats-server)" run_pass --workspace -E 'not binary(compose)'

# This run also generates its media instead of reading ../shared, as machines without it must,
# and moves every fleet's media through the JetStream Object Store instead of a shared directory.
# The command line, configuration files, schemas and stored layouts depend on neither the
# server nor the storage: the first pass covers them. So do what ffmpeg makes of sources and
# damaged media (their media moves as the pipeline's does, which runs here), trace
# propagation, draining and status: none reads ../shared but through an optional check, and
# together they were a seventh of this pass.
once='binary(cli) | binary(configs) | binary(schema) | binary(layouts) | binary(sources)'
once="$once | binary(damaged) | binary(telemetry) | binary(drain) | binary(status)"
echo "== integration tests against $("$current" --version), without ../shared media, over the object store"
FFLEET_NATS_SERVER="$PWD/$current" FFLEET_TEST_NO_SHARED=1 FFLEET_TEST_STORAGE=object-store \
  run_pass --workspace -E "kind(test) and not binary(compose) and not ($once)"

# Its own nats-servers run in the containers: one pass is enough. The images take the release
# binary setup.sh built (rebuilt from Docker's cache in seconds when it did not change).
echo "== compose deployment (tests/compose.rs)"
# Where Docker is installed the suite is expected to run: it fails, not skips, when it cannot
# (FFLEET_COMPOSE_REQUIRED=0 lets it skip).
if command -v docker >/dev/null 2>&1; then
  export FFLEET_COMPOSE_REQUIRED="${FFLEET_COMPOSE_REQUIRED:-1}"
  if docker info >/dev/null 2>&1; then
    ./scripts/images.sh
  fi
fi
run_pass --test compose --no-capture
