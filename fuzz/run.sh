#!/usr/bin/env bash
# Runs every merge fuzz target for a fixed time budget (default 60 s each).
#
#   fuzz/run.sh            # 60 s per target
#   fuzz/run.sh 600        # 10 min per target
#   fuzz/run.sh 60 to_json # one target
#
# cargo-fuzz wants a nightly toolchain; RUSTC_BOOTSTRAP=1 lets the stable
# one accept its flags (AddressSanitizer included). Needs `cargo install
# cargo-fuzz` once. Corpora start from the real fixtures and grow under
# fuzz/corpus/ (ignored by git); crashes land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
budget="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(read_trace to_pftrace to_json scan_json micros xplane)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
fixtures=../tests/fixtures/real-jax
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    case "$target" in
        read_trace | to_pftrace | to_json)
            # A gzipped real trace, and a plain one cut to a few KB.
            cp "$fixtures"/jax_multi2/proc0/plugins/profile/*/vm.trace.json.gz "corpus/$target/jax.gz"
            gzip -dc "$fixtures"/jax_multi2/proc1/plugins/profile/*/vm.trace.json.gz | head -c 4096 \
                > "corpus/$target/jax-head.json" || true
            ;;
        scan_json)
            printf '{"a":[1,2.5e-3,{"b":"c\\"d"}],"e":true,"f":null}' > "corpus/$target/object.json"
            ;;
        micros)
            printf '43.826000000000001' > "corpus/$target/jax"
            printf '1795384060465391.136' > "corpus/$target/epoch"
            ;;
        xplane)
            cp "$fixtures"/jax_single/plugins/profile/*/vm.xplane.pb "corpus/$target/jax.xplane.pb"
            ;;
    esac
    echo "== $target: ${budget}s"
    cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$budget" -rss_limit_mb=2048 2>&1 \
        | grep -E "^(Done|==[0-9]+==|SUMMARY|artifact_prefix|Test unit)" || true
    if compgen -G "artifacts/$target/crash-*" >/dev/null; then
        echo "$target: crashes in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
echo "all targets ran ${budget}s without a crash"
