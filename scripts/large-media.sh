#!/usr/bin/env bash
# Large media at replicas 3 (issue 21, item 5): a source of N GiB is generated on the host,
# uploaded by `ffleet submit --upload --wait` as the submitter through the published ports of the
# compose fleet (compose.yaml: three NATS nodes, every stream and the media object store at 3
# replicas, fsync on every write, TLS and per-role credentials), transcoded, fetched back and
# checked frame-exact against the source. Meanwhile the peak memory of every process of every
# container is recorded, and of the host's `ffleet submit`, so the claim "no process's peak RSS
# grows with the object's size" can be checked by running two sizes:
#
#   scripts/large-media.sh --size-gib 0.25                  # quick trial, ~1 min here
#   scripts/large-media.sh --size-gib 0.25 --size-gib 4     # both, then a growth comparison
#
# Each size gets a fresh fleet (its own compose project, `ffleet-large`, and host ports
# 24222-24224, so the test suite's `ffleet-compose-test` is left alone), torn down with its
# volumes (`down -v`) at the end, on failure too. The source is rawvideo 640x360 yuv420p at 25 fps
# with a PCM mono track in NUT (every frame a keyframe, nothing to decode; the audio makes the
# fleet's tracks unit download the whole source from the bucket on an encoder): 4 GiB is 12,291
# frames, 491.64 s. It exits non-zero when the job fails, the output is not frame-exact, a
# container restarted or was OOM-killed, or (with two sizes or more) a process's peak RSS at the
# largest size is over its peak at the smallest by more than 64 MiB and 50%.
#
# Time (2 cores, one disk): 0.25 GiB about 1 min, 4 GiB about 7.5 min (generation, upload,
# split, encode, merge, fetch, checks; the fleet's start ~10 s per size): 8.5 min for both.
# Disk: about 10x the largest size, checked before anything starts (the source and the output
# in --dir; in Docker's root, each of the three NATS nodes holds the source and its cuts, and
# the splitter holds a copy of both while it cuts). NATS nodes cap their store at 20G
# (nats/compose.conf `max_file_store`), so about 8 GiB is the largest source that fits.
# Needs: docker with `docker compose` or docker-compose 1.x; the images scripts/images.sh builds
# (FFLEET_IMAGE, default ffleet:local; FFLEET_NATS_IMAGE, default ffleet-nats:2.15.1); ffleet
# (FFLEET_BIN, default target/release/ffleet, else on PATH); ffmpeg and ffprobe; python3; GNU
# time at /usr/bin/time (Debian's `time` package); root or read access to other users' /proc
# entries. Optional: ../shared/tools/check-output.py beside the repository (or
# CHECK_OUTPUT=path) and a python3 with numpy, for the per-frame PSNR check.
#
# Options: --size-gib N (repeatable, default 4), --encoders N (2), --slots N (encoder slots, 1),
# --dir DIR (parent of the work dir, default /var/tmp), --no-audio, --segment-seconds S,
# --no-psnr (skip check-output.py), --keep (keep the source and output files), --project NAME,
# --ports P1,P2,P3.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

sizes=()
encoders=2
slots=1
parent="${TMPDIR:-/var/tmp}"
audio=1
segment_seconds=""
psnr=1
keep=0
project="ffleet-large"
ports="24222,24223,24224"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "large-media: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --size-gib) sizes+=("${2:?--size-gib needs a number}"); shift 2 ;;
    --encoders) encoders="${2:?}"; shift 2 ;;
    --slots) slots="${2:?}"; shift 2 ;;
    --dir) parent="${2:?}"; shift 2 ;;
    --no-audio) audio=0; shift ;;
    --segment-seconds) segment_seconds="${2:?}"; shift 2 ;;
    --no-psnr) psnr=0; shift ;;
    --keep) keep=1; shift ;;
    --project) project="${2:?}"; shift 2 ;;
    --ports) ports="${2:?}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ ${#sizes[@]} -gt 0 ] || sizes=(4)
for s in "${sizes[@]}"; do
  awk -v s="$s" 'BEGIN { exit !(s + 0 > 0 && s + 0 <= 64) }' || die "--size-gib $s: want a number in (0, 64]"
done
IFS=, read -r port1 port2 port3 <<<"$ports"
[ -n "${port3:-}" ] || die "--ports wants three comma-separated ports"

# ---------------------------------------------------------------------------------------------
# Tools.
bin="${FFLEET_BIN:-$repo/target/release/ffleet}"
[ -x "$bin" ] || bin="$(command -v ffleet || true)"
[ -n "$bin" ] && [ -x "$bin" ] || die "no ffleet binary (FFLEET_BIN, target/release/ffleet or PATH)"
for t in docker ffmpeg ffprobe python3 awk; do
  command -v "$t" >/dev/null || die "$t is missing"
done
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (Debian: apt-get install time)"
if docker compose version >/dev/null 2>&1; then
  compose_tool=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose_tool=(docker-compose)
else
  die "neither 'docker compose' nor docker-compose is installed"
fi
export FFLEET_IMAGE="${FFLEET_IMAGE:-ffleet:local}"
export FFLEET_NATS_IMAGE="${FFLEET_NATS_IMAGE:-ffleet-nats:2.15.1}"
for img in "$FFLEET_IMAGE" "$FFLEET_NATS_IMAGE"; do
  docker image inspect "$img" >/dev/null 2>&1 || die "image $img is missing: run scripts/images.sh"
done
check_output="${CHECK_OUTPUT:-$repo/../shared/tools/check-output.py}"
numpy_python=""
for py in python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null && "$py" -c 'import numpy' 2>/dev/null; then
    numpy_python="$py"
    break
  fi
done

# ---------------------------------------------------------------------------------------------
# Disk: refuse before anything is written.
gib=$((1 << 30))
largest="$(printf '%s\n' "${sizes[@]}" | sort -g | tail -1)"
mkdir -p "$parent"
docker_root="$(docker info -f '{{.DockerRootDir}}' 2>/dev/null || echo /var/lib/docker)"
avail_kib() { df -Pk "$1" | awk 'NR == 2 { print $4 }'; }
# In --dir: the source and the output (much smaller), 1.1x and 1 GiB of slack. In Docker's root:
# 3 NATS nodes x (source + cuts) + the splitter's copy of the source and its cuts + an encoder's
# copy of the source for the tracks unit, 9x, and 2 GiB for images' layers and logs.
need_dir="$(awk -v s="$largest" 'BEGIN { printf "%d", (s * 1.1 + 1) * 1048576 }')"
need_docker="$(awk -v s="$largest" 'BEGIN { printf "%d", (s * 9 + 2) * 1048576 }')"
if [ "$(stat -c %d "$parent")" = "$(stat -c %d "$docker_root" 2>/dev/null || echo x)" ]; then
  need=$((need_dir + need_docker))
  have="$(avail_kib "$parent")"
  if [ "$have" -lt "$need" ]; then
    die "$(printf 'not enough disk for %s GiB: %s and %s share a filesystem with %.1f GiB free; need %.1f GiB (about 10x the size: the source, and 3 NATS replicas of the source and its cuts, and the splitter'"'"'s copies)' \
      "$largest" "$parent" "$docker_root" "$(awk -v k="$have" 'BEGIN{print k/1048576}')" "$(awk -v k="$need" 'BEGIN{print k/1048576}')")"
  fi
else
  for pair in "$parent:$need_dir" "$docker_root:$need_docker"; do
    d="${pair%:*}" n="${pair##*:}"
    have="$(avail_kib "$d")"
    [ "$have" -ge "$n" ] || die "$(printf 'not enough disk for %s GiB in %s: %.1f GiB free, need %.1f GiB' \
      "$largest" "$d" "$(awk -v k="$have" 'BEGIN{print k/1048576}')" "$(awk -v k="$n" 'BEGIN{print k/1048576}')")"
  done
fi
awk -v s="$largest" 'BEGIN { exit !(s > 8) }' &&
  echo "large-media: warning: $largest GiB may not fit the NATS nodes' 20G store (2x the size and the streams' reservations)" >&2

work="$(mktemp -d "$parent/ffleet-large.XXXXXX")"
echo "== work dir $work"

# ---------------------------------------------------------------------------------------------
# The compose fleet.
compose() {
  (cd "$repo" && FFLEET_SECRETS_DIR="$work/secrets" \
    FFLEET_NATS_PORT_1="$port1" FFLEET_NATS_PORT_2="$port2" FFLEET_NATS_PORT_3="$port3" \
    FFLEET_ENCODER_SLOTS="$slots" FFLEET_HEALTH_INTERVAL=2s \
    "${compose_tool[@]}" -p "$project" -f "$repo/compose.yaml" "$@")
}
project_ids() { docker ps -aq --filter "label=com.docker.compose.project=$project"; }

sampler=""
fleet_up=0
big_files=()
cleanup() {
  local rc=$?
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; fi
  if [ "$fleet_up" = 1 ]; then
    echo "== tearing down $project"
    compose down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  if [ "$keep" = 0 ]; then
    for f in "${big_files[@]}"; do rm -f "$f"; done
  fi
  rm -rf "$work/secrets" "$work/client-work"
  echo "== logs, figures and memory samples in $work (exit $rc)"
}
trap cleanup EXIT

"$bin" secrets init "$work/secrets" --host nats-1 --host nats-2 --host nats-3 >/dev/null

# Every container of the project up (and healthy where it has a healthcheck), provision exited 0.
wait_healthy() {
  local deadline=$((SECONDS + $1)) pending ids
  while :; do
    ids="$(project_ids)"
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      pending="$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' $ids |
        awk '$1 ~ /provision/ { if (!($2 == "exited" && $4 == 0)) print; next }
             { if (!($2 == "running" && $3 == "healthy")) print }')"
      [ -z "$pending" ] && return 0
    else
      pending="no containers"
    fi
    if [ $SECONDS -gt "$deadline" ]; then
      echo "large-media: not healthy after $1 s: $pending" >&2
      return 1
    fi
    sleep 1
  done
}

# ---------------------------------------------------------------------------------------------
# Memory: every second, every process of every container of the project, from the host's /proc
# (works on cgroup v1 and v2): per container the peak sum of VmRSS, per process name the highest
# VmHWM seen (each process's own peak, so a peak between samples is not missed). The cgroup's own
# peak counters are not used: they count the page cache (cgroup v1's max_usage_in_bytes read
# 15-24 GiB here for containers that had moved no media at all), not what a process holds.
cat >"$work/sampler.py" <<'PY'
import json, os, re, signal, subprocess, sys, time
project, out = sys.argv[1], sys.argv[2]
ID = re.compile(r'(?:/docker/|docker-)([0-9a-f]{64})')
state, known, health, stop = {}, {}, {}, [False]
signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))

def refresh():
    # Also each container's health: how often it was seen unhealthy, and its longest streak of
    # failed healthchecks.
    ids = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter",
                          f"label=com.docker.compose.project={project}"],
                         capture_output=True, text=True).stdout.split()
    if not ids:
        return
    fmt = ('{{.Id}} {{.Name}} {{index .Config.Labels "com.docker.compose.service"}} '
           '{{if .State.Health}}{{.State.Health.Status}} {{.State.Health.FailingStreak}}{{else}}none 0{{end}}')
    res = subprocess.run(["docker", "inspect", "-f", fmt, *ids], capture_output=True, text=True).stdout
    for line in res.splitlines():
        p = line.split()
        if len(p) == 5:
            known[p[0]] = (p[1].lstrip("/"), p[2])
            h = health.setdefault(p[1].lstrip("/"), {"unhealthy_seen": 0, "max_failing_streak": 0})
            h["unhealthy_seen"] += p[3] == "unhealthy"
            h["max_failing_streak"] = max(h["max_failing_streak"], int(p[4]))

def kib(status, key):
    m = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) if m else 0

def dump():
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        for name, h in health.items():
            if name in state:
                state[name]["health"] = h
        json.dump(state, f, indent=1, sort_keys=True)
    os.replace(tmp, out)

n = 0
while not stop[0]:
    if n % 3 == 0:
        refresh()
    sums = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cg = open(f"/proc/{pid}/cgroup").read()
            m = ID.search(cg)
            if not m or m.group(1) not in known:
                continue
            st = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        cid = m.group(1)
        name, service = known[cid]
        c = state.setdefault(name, {"service": service, "rss_sum_peak_kib": 0, "hwm_kib": {},
                                    "samples": 0})
        comm = re.search(r"^Name:\s+(\S+)", st, re.M).group(1)
        c["hwm_kib"][comm] = max(c["hwm_kib"].get(comm, 0), kib(st, "VmHWM"))
        sums[name] = sums.get(name, 0) + kib(st, "VmRSS")
    for name, s in sums.items():
        state[name]["rss_sum_peak_kib"] = max(state[name]["rss_sum_peak_kib"], s)
        state[name]["samples"] += 1
    n += 1
    if n % 10 == 0:
        dump()
    time.sleep(1)
dump()
PY

# Per service, the highest of its containers: main process (ffleet / nats-server), children
# (ffmpeg, ffprobe), all processes of the container together.
summarize_mem() {
  python3 - "$1" <<'PY'
import json, sys
state = json.load(open(sys.argv[1]))
svc = {}
for c in state.values():
    h = c["hwm_kib"]
    main = max(h.get("ffleet", 0), h.get("nats-server", 0))
    child = max([v for k, v in h.items() if k in ("ffmpeg", "ffprobe")] or [0])
    hc = c.get("health", {})
    s = svc.setdefault(c["service"], [0, 0, 0, 0, 0, 0])
    s[0] = max(s[0], main); s[1] = max(s[1], child); s[2] = max(s[2], c["rss_sum_peak_kib"])
    s[3] += 1; s[4] = max(s[4], hc.get("max_failing_streak", 0)); s[5] += hc.get("unhealthy_seen", 0)
for name in sorted(svc):
    m, ch, tot, n, streak, unhealthy = svc[name]
    print(f"{name}\t{n}\t{m/1024:.0f}\t{ch/1024:.0f}\t{tot/1024:.0f}\t{streak}\t{unhealthy}")
PY
}

# "packets duration" of one stream of a file (pts span plus the last packet's duration).
probe_stream() {
  ffprobe -v error -select_streams "$2" -show_entries packet=pts_time,duration_time -of csv=p=0 "$1" |
    awk -F, '$1 != "N/A" && $1 != "" { n++; t = $1 + 0; d = ($2 == "N/A" || $2 == "") ? 0 : $2 + 0
             if (n == 1 || t < lo) lo = t; if (n == 1 || t + d > hi) hi = t + d }
             END { printf "%d %.6f\n", n, (n ? hi - lo : 0) }'
}

now() { date +%s.%N; }
table() { if command -v column >/dev/null; then column -t -s $'\t'; else cat; fi; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# One size: a fresh fleet, a source, the job, the checks. Appends a line to $work/figures.tsv.
# Called in an `||` list, where bash ignores `set -e`: every step that can fail is checked.
failures=0
printf 'size_gib\tbytes\tframes\tgen_s\tup_s\tupload_s\tupload_mbs\tjob_wall_s\tclient_s\tsegments\tframes_ok\tpsnr\tsubmit_rss_mib\trestarts\n' >"$work/figures.tsv"

run_size() {
  local size="$1" label="${1}GiB"
  local fail=""
  echo
  echo "=================== $size GiB ==================="
  local bytes frame_bytes frames dur
  bytes="$(awk -v s="$size" -v g="$gib" 'BEGIN { printf "%.0f", s * g }')"
  frame_bytes=$((640 * 360 * 3 / 2))
  [ "$audio" = 1 ] && frame_bytes=$((frame_bytes + 48000 * 2 / 25))
  frames=$((bytes / frame_bytes))
  dur="$(awk -v f="$frames" 'BEGIN { printf "%.2f", f / 25 }')"
  local src="$work/src-$label.nut" out="$work/out-$label.mp4"
  big_files+=("$src" "$out")

  echo "== generating $src: $frames frames, $dur s"
  local t0 t1
  t0="$(now)"
  local ain=() amap=()
  if [ "$audio" = 1 ]; then
    ain=(-f lavfi -i "sine=frequency=440:sample_rate=48000")
    amap=(-map 1:a -c:a pcm_s16le)
  fi
  ffmpeg -nostdin -v error -f lavfi -i "testsrc2=size=640x360:rate=25" "${ain[@]}" \
    -map 0:v -c:v rawvideo -pix_fmt yuv420p -frames:v "$frames" "${amap[@]}" -t "$dur" -f nut -y "$src" ||
    { echo "large-media: generating the source failed" >&2; return 1; }
  t1="$(now)"
  local gen_s; gen_s="$(secs "$t0" "$t1")"
  local src_bytes; src_bytes="$(stat -c %s "$src")"
  echo "   $src_bytes bytes in $gen_s s"

  echo "== fleet up ($project, ports $ports, $encoders encoders x $slots slot)"
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  fleet_up=1
  t0="$(now)"
  compose up -d --scale "encoder=$encoders" >"$work/up-$label.log" 2>&1 || { cat "$work/up-$label.log" >&2; return 1; }
  if ! wait_healthy 300; then
    compose logs --no-color >"$work/logs-$label.txt" 2>&1 || true
    echo "   container logs: $work/logs-$label.txt" >&2
    return 1
  fi
  local up_s; up_s="$(secs "$t0" "$(now)")"
  echo "   healthy in $up_s s"

  python3 "$work/sampler.py" "$project" "$work/mem-$label.json" &
  sampler=$!

  echo "== submit --upload --wait"
  local job
  job="large-$(date +%s)"
  local sub_args=(-s "tls://127.0.0.1:$port1,tls://127.0.0.1:$port2,tls://127.0.0.1:$port3"
    submit --upload --wait --job-id "$job")
  [ -n "$segment_seconds" ] && sub_args+=(--segment-seconds "$segment_seconds")
  local limit
  limit="$(awk -v s="$size" 'BEGIN { printf "%d", 900 + 900 * s }')"
  local s="$work/secrets" rc=0
  t0="$(now)"
  set +e
  (
    cd "$work"
    unset FFLEET_CONFIG
    FFLEET_NATS__ROLE=submitter FFLEET_NATS__NKEY_SEED_FILE="$s/submitter.nk" \
      FFLEET_NATS__TLS_CA_FILE="$s/ca.pem" FFLEET_NATS__TLS_CERT_FILE="$s/client.pem" \
      FFLEET_NATS__TLS_KEY_FILE="$s/client-key.pem" FFLEET_NATS__STARTUP_WAIT_SECS=120 \
      FFLEET_STORAGE__WORK_DIR="$work/client-work" \
      timeout "$limit" /usr/bin/time -v -o "$work/time-$label.txt" \
      "$bin" "${sub_args[@]}" "$src" -o "$out" 2>"$work/submit-$label.err" |
      while IFS= read -r line; do printf '%s %s\n' "$(now)" "$line"; echo "   $line" >&2; done \
        >"$work/submit-$label.out"
    exit "${PIPESTATUS[0]}"
  )
  rc=$?
  set -e
  t1="$(now)"
  local client_s; client_s="$(secs "$t0" "$t1")"
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  sampler=""
  [ "$rc" = 0 ] || fail="submit exited $rc ($(tail -3 "$work/submit-$label.err" | tr '\n' ' '))"

  # The job id is printed once the upload is stored and the job submitted.
  local upload_s="-" upload_mbs="-" job_wall="-" segments="-"
  local t_id
  t_id="$(awk -v j="$job" '$2 == j { print $1; exit }' "$work/submit-$label.out")"
  if [ -n "$t_id" ]; then
    upload_s="$(secs "$t0" "$t_id")"
    upload_mbs="$(awk -v b="$src_bytes" -v s="$upload_s" 'BEGIN { printf "%.0f", b / 1e6 / s }')"
  fi
  local summary
  summary="$(grep -E ' frames?, ' "$work/submit-$label.out" | tail -1 || true)"
  if [ -n "$summary" ]; then
    job_wall="$(sed -nE 's/.* in ([0-9.]+) s \(.*/\1/p' <<<"$summary")"
    segments="$(sed -nE 's/.* ([0-9]+) segments?, .*/\1/p' <<<"$summary")"
  fi
  local submit_rss
  submit_rss="$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$work/time-$label.txt" 2>/dev/null || true)"

  # Restarts and OOM kills, then logs, then the fleet goes.
  local restarts
  # shellcheck disable=SC2046
  restarts="$(docker inspect -f '{{.Name}} {{.RestartCount}} {{.State.OOMKilled}}' $(project_ids) |
    awk '$2 > 0 || $3 == "true" { printf "%s%s restarts=%s oom=%s", sep, substr($1, 2), $2, $3; sep = "; " }' || true)"
  [ -z "$restarts" ] || fail="${fail:+$fail; }container trouble: $restarts"
  compose logs --no-color >"$work/logs-$label.txt" 2>&1 || true
  docker exec "$(docker ps -q --filter "label=com.docker.compose.project=$project" --filter label=com.docker.compose.service=nats-1 | head -1)" \
    wget -q -O - 'http://127.0.0.1:8222/jsz?accounts=true&streams=true' >"$work/jsz-$label.json" 2>/dev/null || true
  echo "== fleet down"
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  fleet_up=0

  # Frame-exact: the same frame count, video (and audio) duration within a frame.
  local frames_ok="-" psnr_res="-"
  if [ -s "$out" ]; then
    echo "== checking $out against the source"
    local sv ov sa oa
    sv="$(probe_stream "$src" v:0)"; ov="$(probe_stream "$out" v:0)"
    echo "   video packets/duration: source $sv, output $ov"
    if awk -v a="$sv" -v b="$ov" 'BEGIN { split(a, x, " "); split(b, y, " ")
          exit !(x[1] == y[1] && x[1] > 0 && (x[2] - y[2])^2 <= (0.04 * 1.01)^2) }'; then
      frames_ok="yes"
    else
      frames_ok="NO"; fail="${fail:+$fail; }video not frame-exact: source $sv, output $ov"
    fi
    if [ "$audio" = 1 ]; then
      sa="$(probe_stream "$src" a:0)"; oa="$(probe_stream "$out" a:0)"
      echo "   audio packets/duration: source $sa, output $oa"
      if ! awk -v a="$sa" -v b="$oa" 'BEGIN { split(a, x, " "); split(b, y, " ")
            exit !(y[1] > 0 && (x[2] - y[2])^2 <= (0.04 * 1.01 + 0.03)^2) }'; then
        frames_ok="NO"; fail="${fail:+$fail; }audio duration off: source $sa, output $oa"
      fi
    fi
    if [ "$psnr" = 1 ] && [ -f "$check_output" ] && [ -n "$numpy_python" ]; then
      local climit t2
      climit="$(awk -v s="$size" 'BEGIN { printf "%d", 300 + 300 * s }')"
      t2="$(now)"
      if psnr_res="$(timeout "$climit" "$numpy_python" "$check_output" "$src" "$out" 2>&1)"; then
        echo "   check-output.py ($(secs "$t2" "$(now)") s): $psnr_res"
        psnr_res="$(sed -nE 's/.*minpsnr=([0-9.]+).*/\1/p' <<<"$psnr_res" | head -1)"
        psnr_res="${psnr_res:-ok}"
      else
        local crc=$?
        if [ "$crc" = 124 ]; then
          echo "   check-output.py skipped: over ${climit} s"; psnr_res="skipped (slow)"
        else
          echo "   check-output.py: $psnr_res"; fail="${fail:+$fail; }check-output.py: $psnr_res"; psnr_res="FAIL"
        fi
      fi
    else
      psnr_res="skipped"
      echo "   check-output.py skipped (--no-psnr, $check_output missing, or no python3 with numpy)"
    fi
  else
    fail="${fail:+$fail; }no output"
  fi

  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$src_bytes" "$frames" "$gen_s" \
    "$up_s" "$upload_s" "$upload_mbs" "${job_wall:--}" "$client_s" "${segments:--}" "$frames_ok" \
    "${psnr_res:--}" "${submit_rss:--}" "${restarts:-none}" >>"$work/figures.tsv"
  if [ -s "$work/mem-$label.json" ]; then
    summarize_mem "$work/mem-$label.json" >"$work/peaks-$label.tsv"
    printf 'submit (host)\t1\t%s\t0\t%s\t-\t-\n' "${submit_rss:-0}" "${submit_rss:-0}" >>"$work/peaks-$label.tsv"
  fi
  if [ "$keep" = 0 ]; then rm -f "$src" "$out"; fi

  if [ -n "$fail" ]; then
    echo "large-media: $size GiB FAILED: $fail" >&2
    echo "   container logs: $work/logs-$label.txt" >&2
    return 1
  fi
  echo "== $size GiB passed"
}

for size in "${sizes[@]}"; do
  run_size "$size" || { failures=$((failures + 1)); break; }
done

# ---------------------------------------------------------------------------------------------
# Figures.
echo
echo "=================== figures ==================="
table <"$work/figures.tsv"
for size in "${sizes[@]}"; do
  f="$work/peaks-${size}GiB.tsv"
  [ -f "$f" ] || continue
  echo
  echo "peak memory at $size GiB, MiB (highest replica; main = ffleet or nats-server VmHWM,"
  echo "children = ffmpeg/ffprobe VmHWM, all = peak sum of the RSS of the container's processes;"
  echo "health: longest streak of failed healthchecks, times seen unhealthy, sampled every 3 s)"
  { printf 'service\tcontainers\tmain\tchildren\tall\thc_streak\tunhealthy\n'; cat "$f"; } | table
done

# Growth: smallest against largest size that both have figures.
smallest="$(printf '%s\n' "${sizes[@]}" | sort -g | head -1)"
if [ "$smallest" != "$largest" ] && [ -f "$work/peaks-${smallest}GiB.tsv" ] && [ -f "$work/peaks-${largest}GiB.tsv" ]; then
  echo
  # The three NATS nodes are one role (which node leads which stream is chance): their highest.
  echo "peak RSS of each process, $smallest GiB -> $largest GiB (grows: over +64 MiB and +50%)"
  if ! awk -F'\t' '
      { r = $1; sub(/^nats-[0-9]+$/, "nats", r) }
      NR == FNR { if ($3 > m0[r]) m0[r] = $3; if ($4 > c0[r]) c0[r] = $4; next }
      { if ($3 > m1[r]) m1[r] = $3; if ($4 > c1[r]) c1[r] = $4; if (!(r in seen)) { seen[r]; order[++n] = r } }
      END {
        for (i = 1; i <= n; i++) {
          r = order[i]
          if (!(r in m0)) continue
          for (k = 0; k < 2; k++) {
            was = k ? c0[r] : m0[r]; is = k ? c1[r] : m1[r]
            if (k && was == 0 && is == 0) continue
            grows = (is - was > 64 && is > was * 1.5)
            printf "  %-14s %-9s %6d -> %6d MiB %s\n", r, k ? "children" : "main", was, is, grows ? "GROWS" : "flat"
            bad += grows
          }
        }
        exit bad > 0
      }' "$work/peaks-${smallest}GiB.tsv" "$work/peaks-${largest}GiB.tsv"; then
    echo "large-media: a process's peak RSS grew with the object's size" >&2
    failures=$((failures + 1))
  fi
fi

if [ "$failures" -gt 0 ]; then
  exit 1
fi
echo
echo "large-media: all sizes passed"
