# Sourced by bench/merge/run.sh and bench/report/run.sh: builds the release
# binary and the synthetic-capture writer, then writes the benchmark capture
# ($ranks sglang-jax ranks x $events events, xplanes, sidecars, manifest) under
# $work. Sets $rankline and $capture. Needs $repo, $work, $ranks, $events.

command -v /usr/bin/time >/dev/null || apt-get install -y time >/dev/null
cd "$repo"
echo "building (release) ..."
cargo build --release -q -p rankline --bin rankline
cargo build --release -q -p rankline-merge --example bench_capture
rankline="$repo/target/release/rankline"

rm -rf "$work" && mkdir -p "$work"
echo "writing $ranks ranks x $events events under $work ..."
"$repo/target/release/examples/bench_capture" "$work" "$ranks" "$events" | tail -n 3
capture="$work/capture/bench"
