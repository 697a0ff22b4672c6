#!/usr/bin/env bash
# The report benchmark (issue 10): `rankline report` against `rankline merge -o .pftrace` on the
# same capture, in the same script, alternating; results in bench/report/RESULTS.md.
#
#   bench/report/run.sh                          # 8 ranks x 1,000,000 events
#   RANKS=2 EVENTS=100000 RUNS=1 bench/report/run.sh   # a quick smoke run
#
# The capture is the merge benchmark's (bench/merge/run.sh): sglang-jax ranks from the simulated
# server's synthetic writer, with xplanes, sidecars and a manifest. Both commands read it the same
# way (--source auto: each rank's .xplane.pb) with the same clock alignment. Wall time and peak RSS
# from /usr/bin/time -v; targets: report within 1.5x of merge, peak RSS at most 256 MB.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="${WORK:-/tmp/rankline-report-bench}"
ranks="${RANKS:-8}"
events="${EVENTS:-1000000}"
runs="${RUNS:-3}"
results="${RESULTS:-$repo/bench/report/RESULTS.md}"

# shellcheck source=../capture.sh
source "$repo/bench/capture.sh"

# one NAME COMMAND...: one timed run; appends "NAME wall_s rss_mb" to $work/times.
one() {
    local name="$1"; shift
    /usr/bin/time -v -o "$work/$name.time" "$@" > "$work/$name.out" 2> "$work/$name.err"
    local wall rss
    wall="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/$name.time" \
        | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')"
    rss="$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$work/$name.time")"
    echo "$name $wall $rss" >> "$work/times"
    printf '  %-8s %7.2f s  max RSS %5s MB\n' "$name" "$wall" "$rss"
}

: > "$work/times"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "timing, $runs runs each, alternating (load average before: $load_before) ..."
for run in $(seq "$runs"); do
    one merge "$rankline" merge "$capture" -o "$work/merged.pftrace"
    one report "$rankline" report "$capture" -o "$work/report.html"
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
"$rankline" report "$capture" -o "$work/report.json" > /dev/null 2>&1

median() { awk -v n="$1" '$1 == n {print $2}' "$work/times" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
all() { awk -v n="$1" '$1 == n {print $2}' "$work/times" | paste -sd' ' | sed 's/ /, /g'; }
peak() { awk -v n="$1" '$1 == n {print $3}' "$work/times" | sort -n | tail -n 1; }
merge_s="$(median merge)"; report_s="$(median report)"
ratio="$(python3 -c "print(f'{$report_s / $merge_s:.2f}')")"
figures="$(python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
ops = sum(o['count'] for o in r['top_ops'])
steps = sum(len(x['steps']) for x in r['ranks'])
print(f\"{len(r['ranks'])} ranks, {steps} steps, {ops} device ops, {r['collectives']['matched']} collectives matched\")
" "$work/report.json")"
cpu="$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')"

cat > "$results" <<MD
# Report benchmark

\`bench/report/run.sh\` (RANKS=$ranks EVENTS=$events RUNS=$runs), run on $(date -u +"%Y-%m-%d %H:%M UTC"),
commit \`$(git -C "$repo" rev-parse --short HEAD)\` plus the working tree.

Machine: $cpu, $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -sr).
Load average before/after: $load_before / $load_after (the machine is shared with other
engineers' builds and tests, so wall times are noisy; the ratio is what matters: both commands
ran alternately in the same script).

Input: the merge benchmark's capture ($ranks sglang-jax ranks of about $events events each, with
xplanes, sidecars and a manifest), read by both commands from the ranks' .xplane.pb files
(\`--source auto\`). The report found: $figures.

| command | wall, median (s) | all runs (s) | peak RSS (MB) |
|---|---:|---|---:|
| \`rankline merge CAPTURE -o merged.pftrace\` (baseline) | $merge_s | $(all merge) | $(peak merge) |
| **\`rankline report CAPTURE -o report.html\`** | **$report_s** | $(all report) | **$(peak report)** |

Report wall time / merge wall time: **${ratio}x** (target: at most 1.5x). Peak RSS of the report:
**$(peak report) MB** (target: at most 256 MB).
MD
echo "results: $results"
cat "$results"
