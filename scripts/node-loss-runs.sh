#!/usr/bin/env bash
# Node loss, run after run (issue 21): tests/compose.rs up to its node-loss scenario
# (FFLEET_COMPOSE_ONLY=node-loss), N times in a row, each run a fresh compose fleet that kills
# one NATS node mid-job in FFLEET_COMPOSE_NODE_KILLS rounds (default 3: the leader of the unit
# records' stream, the meta leader, a node leading neither). Stops at the first failed run and
# prints how many passed in a row, every round's line and each run's summary.
#
#   scripts/node-loss-runs.sh [RUNS]        # default 10; about 2.5 min a run here (2 cores)
#
# Needs what tests/compose.rs needs: docker with compose, the images scripts/images.sh builds.
# Each run's whole output is kept in $FFLEET_NODE_LOSS_LOGS (default target/node-loss-runs).
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
logs="${FFLEET_NODE_LOSS_LOGS:-target/node-loss-runs}"
mkdir -p "$logs"
cargo nextest run --locked --test compose --no-run >/dev/null 2>&1 || {
  echo "tests/compose.rs does not build" >&2
  exit 2
}
passed=0
for i in $(seq 1 "$runs"); do
  log="$logs/run-$i.log"
  if FFLEET_COMPOSE_ONLY=node-loss cargo nextest run --locked --test compose --no-capture \
    >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "run $i: passed"
  else
    echo "run $i: FAILED (log: $log)"
  fi
  grep -E "node loss round|docker kill a NATS node" "$log" | sed 's/^/  /'
  [ "$passed" -eq "$i" ] || break
done
echo "node loss: $passed of $runs run(s) passed in a row"
[ "$passed" -eq "$runs" ]
