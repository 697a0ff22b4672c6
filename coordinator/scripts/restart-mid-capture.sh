#!/usr/bin/env bash
# Fault scenario "coordinator restart mid-capture", with real processes on
# loopback: N simulated servers, N agents, one coordinator. A capture starts,
# the coordinator is killed with SIGKILL while the ranks profile (no chance to
# save anything on the way out), stays down for a while, and is started again
# on the same storage. The capture must complete with a right manifest.
#
#   cargo build -p rankline && coordinator/scripts/restart-mid-capture.sh
#
# Knobs (environment): N=4 agents, DURATION=2s profiling window, KILL_AFTER=1
# second after the capture starts, DOWN=3 seconds without a coordinator,
# LOSE=1 also kills the last agent while the coordinator is down (its rank must
# end `lost`, the others `ok`), RANKLINE=path to the binary.
set -euo pipefail

N=${N:-4}
DURATION=${DURATION:-2s}
KILL_AFTER=${KILL_AFTER:-1}
DOWN=${DOWN:-3}
LOSE=${LOSE:-}
RANKLINE=${RANKLINE:-$(cd "$(dirname "$0")/../.." && pwd)/target/debug/rankline}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rankline-restart.XXXXXX")
cd "$WORK"

children=()
cleanup() {
    for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
url_in() { # waits for the `listening on URL` line of a process's stdout
    for _ in $(seq 100); do
        if grep -qo 'http://[0-9.:]*' "$1" 2>/dev/null; then grep -o 'http://[0-9.:]*' "$1"; return; fi
        sleep 0.1
    done
    echo "no 'listening on' line in $1" >&2; exit 1
}

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
COORDINATOR=http://127.0.0.1:$PORT
start_coordinator() {
    "$RANKLINE" coordinator --listen "127.0.0.1:$PORT" --storage ./captures >"$1.out" 2>"$1.log" &
    COORDINATOR_PID=$!
    children+=("$COORDINATOR_PID")
    url_in "$1.out" >/dev/null
}

for i in $(seq 0 $((N - 1))); do
    "$RANKLINE" sim-server --port 0 --hostname "h$i" >"server$i.out" 2>"server$i.log" &
    children+=($!)
done
start_coordinator coordinator1
agents=()
for i in $(seq 0 $((N - 1))); do
    "$RANKLINE" agent --coordinator "$COORDINATOR" --server "$(url_in "server$i.out")" \
        --host "h$i" --tp-rank "$i" --spool ./spool >"agent$i.out" 2>"agent$i.log" &
    agents+=($!)
    children+=($!)
done
for _ in $(seq 100); do
    [ "$("$RANKLINE" agents --coordinator "$COORDINATOR" 2>/dev/null | grep -c ' yes ')" -ge "$N" ] && break
    sleep 0.1
done

"$RANKLINE" capture --coordinator "$COORDINATOR" --profile-id restarted --duration "$DURATION" \
    >capture.out 2>&1 || true &
CAPTURE_PID=$!
sleep "$KILL_AFTER"
kill -9 "$COORDINATOR_PID"
KILLED_AT=$(now)
if [ -n "$LOSE" ]; then kill -9 "${agents[$((N - 1))]}"; fi
wait "$CAPTURE_PID" || true
sleep "$DOWN"

start_coordinator coordinator2
RESTARTED_AT=$(now)
"$RANKLINE" capture show restarted --coordinator "$COORDINATOR" --follow >follow.out 2>&1 || true
RECOVERED_IN=$(since "$RESTARTED_AT")

python3 - "$N" "$LOSE" <<'PY'
import json, os, sys
n, lose = int(sys.argv[1]), bool(sys.argv[2])
manifest = json.load(open("captures/restarted/manifest.json"))
states = [rank["status"] for rank in manifest["ranks"]]
expected = ["ok"] * n if not lose else ["ok"] * (n - 1) + ["lost"]
objects = [os.path.join(d, f) for d, _, fs in os.walk("captures/restarted") for f in fs]
print(f"manifest: {manifest['status']}, ranks {states}")
print(f"stored:   {len(objects)} objects, {sum(os.path.getsize(o) for o in objects)} bytes")
if states != expected:
    sys.exit(f"FAIL: expected ranks {expected}")
for rank in manifest["ranks"]:
    for key in (rank["objects"].get("trace"), rank["objects"].get("meta")):
        if rank["status"] == "ok" and not os.path.exists(os.path.join("captures", key)):
            sys.exit(f"FAIL: {key} is in the manifest but not in storage")
PY
reconnected=$(grep -c 'agent reconnected' coordinator2.log || true)
echo "down:     $(echo "$RESTARTED_AT - $KILLED_AT" | bc) s; agents back: $reconnected of $N"
echo "finished: ${RECOVERED_IN} s after the restart (profiling window $DURATION; includes writing and uploading the files)"
echo "PASS (work dir $WORK)"
