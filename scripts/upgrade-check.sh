#!/usr/bin/env bash
# Checks this build against a release listed in releases.toml (the newest, or the version
# given): builds that release's `ffleet` from its commit (a git worktree under .tools/, release
# profile, about 10 minutes on 2 cores the first time; the binary is kept for later runs), then
#   - with --capture, runs it to capture its layouts into tests/fixtures/layouts/<version>/
#     (tests/layouts.rs capture_layouts), for a release just cut;
#   - decodes every release's layouts with this build (tests/layouts.rs);
#   - upgrades a running fleet of it to this build one process at a time while jobs flow, every
#     output byte-identical to the old fleet's (tests/upgrade.rs).
#   - with --compose, also upgrades the compose deployment across images: the release's image
#     (ffleet:<version>, from its binary) and this build's (scripts/images.sh, from a fresh
#     release build), each container replaced in turn while jobs flow (tests/compose.rs,
#     compose_fleet_upgraded_across_images_one_container_at_a_time_loses_no_job).
# Not part of scripts/test.sh: building a release does not fit CI's time.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then export PATH="$HOME/.cargo/bin:$PATH"; fi

capture=0
compose=0
version=""
for arg in "$@"; do
  case "$arg" in
    --capture) capture=1 ;;
    --compose) compose=1 ;;
    -*) echo "usage: $0 [--capture] [--compose] [VERSION]" >&2; exit 2 ;;
    *) version="$arg" ;;
  esac
done
if [ -z "$version" ]; then
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' releases.toml | tail -n1)
fi
commit=$(awk -v want="$version" '
  /^version = / { v = $3; gsub(/"/, "", v) }
  /^commit = / { c = $3; gsub(/"/, "", c); if (v == want) print c }' releases.toml)
if [ -z "$commit" ]; then
  echo "release $version is not listed in releases.toml" >&2
  exit 2
fi

dir="$PWD/.tools/ffleet-$version"
bin="$dir/ffleet"
if [ ! -x "$bin" ]; then
  echo "== building ffleet $version from $commit"
  mkdir -p "$dir"
  rm -rf "$dir/src"
  git worktree prune
  git worktree add --detach "$dir/src" "$commit" >/dev/null
  (cd "$dir/src" && cargo build --release --locked -p ffleet --bin ffleet --target-dir "$dir/target")
  cp "$dir/target/release/ffleet" "$bin"
  git worktree remove --force "$dir/src"
fi
echo "== previous release: $("$bin" --version) ($commit)"

if [ "$capture" = 1 ]; then
  FFLEET_LAYOUTS_BIN="$bin" FFLEET_LAYOUTS_OUT="$PWD/tests/fixtures/layouts/$version" \
    cargo nextest run --locked --test layouts --run-ignored only --no-capture
fi
cargo nextest run --locked --test layouts
FFLEET_PREVIOUS_BIN="$bin" cargo nextest run --locked --test upgrade --run-ignored only --no-capture
# Again with the media through the object store: where this release keeps the fleet's media (the
# scratch bucket) differs from where an earlier one did.
FFLEET_TEST_STORAGE=object-store FFLEET_PREVIOUS_BIN="$bin" \
  cargo nextest run --locked --test upgrade --run-ignored only --no-capture

if [ "$compose" = 1 ]; then
  echo "== compose: ffleet:$version beside this build's image"
  cargo build --release --locked -p ffleet --bin ffleet
  ./scripts/images.sh
  FFLEET_BIN="$bin" FFLEET_IMAGE="ffleet:$version" ./scripts/images.sh
  # Asked for: fails, not skips, where Docker or compose cannot run it.
  FFLEET_COMPOSE_REQUIRED=1 FFLEET_PREVIOUS_IMAGE="ffleet:$version" FFLEET_PREVIOUS_BIN="$bin" \
    cargo nextest run --locked --test compose --run-ignored only --no-capture
fi
