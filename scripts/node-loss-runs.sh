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
# Built once and run directly: every run tests the same build, whatever changes meanwhile.
bin="$(cargo test --locked --test compose --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "compose":
        print(m["executable"])')"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "tests/compose.rs does not build" >&2
  exit 2
fi
cp "$bin" "$logs/compose-test" && bin="$logs/compose-test"
passed=0
for i in $(seq 1 "$runs"); do
  log="$logs/run-$i.log"
  if FFLEET_COMPOSE_ONLY=node-loss "$bin" --nocapture --test-threads 1 >"$log" 2>&1; then
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
