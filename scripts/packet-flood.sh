#!/usr/bin/env bash
# Memory on a packet flood: a tiny file with very many tiny packets, which ffleet's splitter used
# to list in full (ffprobe's JSON, buffered and parsed whole) before checking any limit.
# Makes a 16x16, 1000 fps H.264 clip of FLOOD_PACKETS packets, then prints one table row per
# run of `ffleet transcode` on it:
#   - default limits: refused by the cheap first probe (frame rate), no packet read;
#   - limits raised to accept the rate, `limits.max_packets` one below the flood: the packet
#     scan reads the whole listing (keeping every video packet) and refuses at the last one,
#     the worst case of the bounded scan.
# Beside them, the size of the JSON listing the old code held in memory; with FFLEET_BEFORE set
# to a binary built before the bounded scan, a row for it too (duration limit 1 s: it lists
# every packet, then refuses).
#
# Usage: scripts/packet-flood.sh   (FLOOD_PACKETS=1000000; ffleet from $FFLEET or target/)
set -euo pipefail

cd "$(dirname "$0")/.."
packets=${FLOOD_PACKETS:-1000000}
secs=$((packets / 1000))
dir=$(mktemp -d -t ffleet-flood-XXXXXX)
trap 'rm -rf "$dir"' EXIT

ffleet=${FFLEET:-}
for c in target/release/ffleet target/debug/ffleet; do
    [[ -z ${FFLEET:-} && -x $c && ( -z $ffleet || $c -nt $ffleet ) ]] && ffleet=$c
done
[[ -z $ffleet ]] && { echo "packet-flood: no ffleet binary (cargo build, or set FFLEET)" >&2; exit 2; }

src=$dir/flood.mp4
ffmpeg -nostdin -hide_banner -loglevel error -y -f lavfi -i "color=c=black:s=16x16:r=1000" \
    -t "$secs" -c:v libx264 -preset ultrafast -g 100000 -bf 0 -pix_fmt yuv420p "$src"
size=$(stat -c %s "$src")
json=$(ffprobe -v error -print_format json -show_entries packet=stream_index,pts,dts,duration,flags \
    "$src" | wc -c)

# Peak RSS of the ffleet process itself (VmHWM, sampled until it exits: a high-water mark only
# grows), not of its ffprobe and nats-server children, which /usr/bin/time would fold in (the
# mp4 demuxer's sample index alone is ~100 MB for a million packets, in ffprobe's process).
run() { # label, env...
    local label=$1; shift
    env "$@" "$ffleet" transcode -q "$src" -o "$dir/out.mp4" >"$dir/log" 2>&1 &
    local pid=$! hwm=0 h
    while kill -0 "$pid" 2>/dev/null; do
        h=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [[ -n $h ]] && hwm=$h
        sleep 0.05
    done
    local status=completed
    wait "$pid" || status=refused
    local reason
    reason=$(grep -o 'job failed ([a-z_]*)[^|]*' "$dir/log" | head -1 | cut -c1-90 || true)
    printf '| %s | %s | %.1f | %s |\n' "$label" "$status" "$(bc -l <<<"$hwm/1024")" "${reason:-}"
}

echo "flood: $packets packets in $(bc -l <<<"scale=1; $size/1048576") MB;" \
    "ffprobe's JSON listing (what the old code buffered whole): $(bc -l <<<"scale=1; $json/1048576") MB"
echo
echo "| run | outcome | peak RSS of the ffleet process, MB | reason |"
echo "|---|---|---|---|"
run "default limits" FFLEET_LOG__LEVEL=error
run "rate allowed, max_packets = flood - 1" FFLEET_LOG__LEVEL=error \
    FFLEET_LIMITS__MAX_FRAME_RATE=1000 FFLEET_LIMITS__MAX_PACKETS=$((packets - 1))
if [[ -n ${FFLEET_BEFORE:-} ]]; then
    ffleet=$FFLEET_BEFORE run "before: whole JSON listing, then limits" FFLEET_LOG__LEVEL=error \
        FFLEET_LIMITS__MAX_FRAME_RATE=1000 FFLEET_LIMITS__MAX_DURATION_SECS=1
fi
