#!/usr/bin/env bash
# The whole gate: formatting, lints, unit tests, and the integration tests twice: against
# Debian's nats-server (2.9) and against the pinned current release installed by setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then export PATH="$HOME/.cargo/bin:$PATH"; fi

current=".tools/nats-server-2.15.1/nats-server"
if [ ! -x "$current" ]; then
  echo "missing $current: run scripts/setup.sh first" >&2
  exit 1
fi

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "== tests against $(nats-server --version) (Debian)"
FFLEET_NATS_SERVER="$(command -v nats-server)" cargo nextest run --locked --workspace --no-fail-fast

# This run also generates its media instead of reading ../shared, as machines without it must.
echo "== integration tests against $("$current" --version), without ../shared media"
FFLEET_NATS_SERVER="$PWD/$current" FFLEET_TEST_NO_SHARED=1 \
  cargo nextest run --locked --workspace --no-fail-fast -E 'kind(test)'
