#!/usr/bin/env bash
# What TLS and per-role credentials cost: `ffleet up` (plaintext) against `ffleet up --secure`
# (TLS on every connection, one nkey per role, permissions enforced), alternating, on the same
# machine in the same run, for two loads:
#   job      one 60 s 1280x720 job (submit --wait): media-bound;
#   control  JOBS tiny jobs of ten 1 s segments submitted at once: control-plane-bound.
# Prints wall seconds, CPU seconds of the ffleet services (the `up` process itself, ffmpeg
# excluded) and of nats-server, and the median secured/plain ratios.
#
# Environment: FFLEET (binary, default target/release/ffleet), SECS (60), ROUNDS (2), JOBS (40).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${FFLEET:-target/release/ffleet}")"
secs="${SECS:-60}"
rounds="${ROUNDS:-2}"
jobs="${JOBS:-40}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/media"
ffmpeg -loglevel error -f lavfi -i "testsrc2=size=1280x720:rate=30" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$secs" \
  -c:v libx264 -preset veryfast -g 60 -c:a aac "$work/media/big.mp4"
ffmpeg -loglevel error -f lavfi -i "testsrc2=size=160x120:rate=25" \
  -f lavfi -i "sine=frequency=300:sample_rate=44100" -t 10 \
  -c:v libx264 -preset ultrafast -g 25 -c:a aac "$work/media/tiny.mp4"

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"

# run MODE LOAD ROUND: a fresh fleet, the load, then "wall ffleet_cpu nats_cpu".
run() {
  local mode="$1" load="$2" round="$3" port data log flags=()
  port="$(free_port)"
  data="$work/data-$mode-$load-$round"
  log="$work/up-$mode-$load-$round.log"
  [ "$mode" = secure ] && flags=(--secure)
  "$bin" up "${flags[@]}" --port "$port" --data "$data" --root "$work/media" >"$log" 2>&1 &
  local up=$!
  pids+=("$up")
  for _ in $(seq 1 300); do grep -q '^submit with' "$log" && break; sleep 0.1; done
  local nats
  nats="$(pgrep -P "$up" nats-server | head -1)"
  local env=(FFLEET_STORAGE__WORK_DIR="$work/client-work")
  local url="nats://127.0.0.1:$port"
  if [ "$mode" = secure ]; then
    local s="$data/secrets"
    url="tls://127.0.0.1:$port"
    env+=(FFLEET_NATS__ROLE=submitter FFLEET_NATS__NKEY_SEED_FILE="$s/submitter.nk"
      FFLEET_NATS__TLS_CA_FILE="$s/ca.pem" FFLEET_NATS__TLS_CERT_FILE="$s/client.pem"
      FFLEET_NATS__TLS_KEY_FILE="$s/client-key.pem")
  fi
  local t0 t1 u0 n0 u1 n1
  u0="$(ticks "$up")"; n0="$(ticks "$nats")"; t0="$(date +%s.%N)"
  if [ "$load" = job ]; then
    env "${env[@]}" "$bin" -s "$url" submit --wait "$work/media/big.mp4" \
      -o "$work/media/out-$mode-$round.mp4" >/dev/null
  else
    local subs=()
    for j in $(seq 1 "$jobs"); do
      env "${env[@]}" "$bin" -s "$url" submit --wait --segment-seconds 1 "$work/media/tiny.mp4" \
        -o "$work/media/t-$mode-$round-$j.mp4" >/dev/null &
      subs+=($!)
    done
    for p in "${subs[@]}"; do wait "$p"; done
  fi
  t1="$(date +%s.%N)"; u1="$(ticks "$up")"; n1="$(ticks "$nats")"
  kill "$up"
  wait "$up" 2>/dev/null || true
  awk "BEGIN { printf \"%.2f %.2f %.2f\", $t1 - $t0, ($u1 - $u0) / $hz, ($n1 - $n0) / $hz }"
}

median() { sort -n | awk '{a[NR]=$1} END {printf "%.3f", (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }

for load in job control; do
  echo "== $load: $([ "$load" = job ] && echo "one ${secs} s 1280x720 job" || echo "$jobs jobs of ten 1 s segments at once")"
  printf '%5s %8s %8s %8s %8s %8s %8s %8s\n' round wall_pl wall_sec ratio ffl_pl ffl_sec nats_pl nats_sec
  ratios=()
  for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then p="$(run plain "$load" "$r")"; s="$(run secure "$load" "$r")"
    else s="$(run secure "$load" "$r")"; p="$(run plain "$load" "$r")"; fi
    read -r pw pf pn <<<"$p"
    read -r sw sf sn <<<"$s"
    ratio="$(awk "BEGIN { printf \"%.3f\", $sw / $pw }")"
    ratios+=("$ratio")
    printf '%5s %8s %8s %8s %8s %8s %8s %8s\n' "$r" "$pw" "$sw" "$ratio" "$pf" "$sf" "$pn" "$sn"
  done
  echo "median secured/plain wall ratio ($load): $(printf '%s\n' "${ratios[@]}" | median)"
done
