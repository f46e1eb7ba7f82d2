#!/usr/bin/env bash
# What ffleet can do with this machine's NVIDIA GPU, proven rather than assumed:
#   1. NVML readings (nvidia-smi),
#   2. what an encoder detects (`ffleet capabilities`: its start-up test encodes/decodes),
#   3. each NVENC encoder and NVDEC decoder tried directly with ffmpeg, with its outcome,
#   4. one full `ffleet transcode` job that prefers the GPU (spilling to CPU where the GPU
#      has no NVENC, e.g. A100/H100/H200), run twice to check the output is byte-identical,
# then one summary table. Runs anywhere: without an NVIDIA GPU it says so and the job runs on
# the CPU. Exit status: 0 when the job completed, 1 otherwise.
#
# Usage: scripts/gpu-check.sh            (ffleet from $FFLEET, target/{release,debug}, or PATH)
#   GPU_CHECK_SECS=8 GPU_CHECK_SIZE=1280x720 GPU_CHECK_PROFILE=h264 GPU_CHECK_OUT=dir
set -uo pipefail

cd "$(dirname "$0")/.."
secs=${GPU_CHECK_SECS:-8}
size=${GPU_CHECK_SIZE:-1280x720}
profile=${GPU_CHECK_PROFILE:-h264}
out=${GPU_CHECK_OUT:-$(mktemp -d -t ffleet-gpu-check-XXXXXX)}
mkdir -p "$out"

# $FFLEET, else the newer of this checkout's release and debug builds, else the one on PATH.
ffleet=${FFLEET:-}
for c in target/release/ffleet target/debug/ffleet; do
    [[ -z ${FFLEET:-} && -x $c && ( -z $ffleet || $c -nt $ffleet ) ]] && ffleet=$c
done
[[ -z $ffleet ]] && ffleet=$(command -v ffleet || true)
if [[ -z $ffleet ]]; then
    echo "gpu-check: no ffleet binary (cargo build --release, or set FFLEET)" >&2
    exit 2
fi

rows=()   # "check|outcome|detail" for the summary
row() { rows+=("$1|$2|$3"); }
section() { printf '\n== %s\n' "$1"; }

section "nvml (nvidia-smi)"
gpu=no
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    gpu=yes
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used,utilization.gpu,utilization.encoder,utilization.decoder,encoder.stats.sessionCount \
        --format=csv 2>&1
    row "nvml" "gpu" "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
else
    echo "no NVIDIA GPU (nvidia-smi missing or finds no device)"
    row "nvml" "no gpu" "no NVIDIA GPU on this machine"
fi

section "what the encoder detects (ffleet capabilities)"
echo "($ffleet)"
"$ffleet" capabilities | tee "$out/capabilities.txt"
"$ffleet" capabilities --json >"$out/capabilities.json"
caps=$(sed -n 's/^capabilities: *//p' "$out/capabilities.txt")
row "encoder offers" "${caps:-none}" "start-up test encodes decide; NVML is only the hint"

# One ffmpeg run per accelerator, each bounded; prints outcome and seconds.
try() {
    local name=$1; shift
    local t0=$SECONDS err
    if err=$(timeout 30 ffmpeg -hide_banner -nostdin -loglevel error "$@" 2>&1); then
        printf '%-22s ok      %3ss\n' "$name" $((SECONDS - t0))
        row "$name" "ok" ""
    else
        # First line, without ffmpeg's "[h264_nvenc @ 0x55d8...] " context prefix.
        err=$(head -1 <<<"$err" | sed 's/^\[[^]]* @ 0x[0-9a-f]*\] //')
        printf '%-22s failed  %3ss  %s\n' "$name" $((SECONDS - t0)) "$err"
        row "$name" "failed" "$err"
    fi
}

section "test encodes and decodes (ffmpeg)"
pic="color=c=gray:s=1280x720:r=25:d=0.4"
for enc in h264_nvenc hevc_nvenc av1_nvenc; do
    try "encode $enc" -f lavfi -i "$pic" -pix_fmt yuv420p -c:v "$enc" -f null -
done
ffmpeg -hide_banner -nostdin -loglevel error -y -f lavfi -i "$pic" -c:v libx264 -pix_fmt yuv420p "$out/probe-h264.mp4"
ffmpeg -hide_banner -nostdin -loglevel error -y -f lavfi -i "$pic" -c:v libx265 -pix_fmt yuv420p "$out/probe-hevc.mp4" 2>/dev/null
try "decode h264_cuvid" -c:v h264_cuvid -i "$out/probe-h264.mp4" -f null -
[[ -s $out/probe-hevc.mp4 ]] && try "decode hevc_cuvid" -c:v hevc_cuvid -i "$out/probe-hevc.mp4" -f null -
try "decode -hwaccel cuda" -hwaccel cuda -hwaccel_output_format cuda -i "$out/probe-h264.mp4" -f null -

section "one job preferring the GPU (ffleet transcode --prefer gpu, twice)"
src=$out/source.mp4
ffmpeg -hide_banner -nostdin -loglevel error -y \
    -f lavfi -i "testsrc2=s=$size:r=25:d=$secs" -f lavfi -i "sine=frequency=440:duration=$secs" \
    -c:v libx264 -preset veryfast -g 50 -pix_fmt yuv420p -c:a aac -shortest "$src"
job_ok=yes
for run in 1 2; do
    t0=$(date +%s.%N)
    if "$ffleet" transcode "$src" -o "$out/out$run.mp4" --profile "$profile" --prefer gpu \
        --segment-seconds 2 --stats "$out/stats$run.json" -q; then
        wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        placed=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(", ".join(f"{k}: {v}" for k, v in s["units_by_capability"].items()) + "; failed attempts:", s["failed_attempts"])' "$out/stats$run.json" 2>/dev/null)
        echo "run $run: completed in ${wall} s; units by capability: $placed"
        row "transcode run $run" "completed" "${wall} s; $placed"
    else
        echo "run $run: FAILED"
        row "transcode run $run" "failed" "see above"
        job_ok=no
    fi
done
if [[ $job_ok == yes ]]; then
    frames_in=$(ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$src")
    frames_out=$(ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$out/out1.mp4")
    row "frames source/output" "$([[ $frames_in == "$frames_out" ]] && echo same || echo DIFFERENT)" "$frames_in / $frames_out"
    if cmp -s "$out/out1.mp4" "$out/out2.mp4"; then
        row "two runs" "byte-identical" "same node$([[ $gpu == yes ]] && echo ', same GPU class')"
    else
        row "two runs" "differ" "not byte-identical on the same node"
    fi
fi

section "summary"
printf '%-24s | %-16s | %s\n' "check" "outcome" "detail"
printf '%-24s-+-%-16s-+-%s\n' "------------------------" "----------------" "------"
for r in "${rows[@]}"; do
    IFS='|' read -r a b c <<<"$r"
    printf '%-24s | %-16s | %s\n' "$a" "$b" "$c"
done
echo
echo "gpu: $gpu; files in $out"
[[ $job_ok == yes ]]
