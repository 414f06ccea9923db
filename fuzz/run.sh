#!/usr/bin/env bash
# The long fuzz campaign: each target in turn (one at a time, niced: the machine may be
# shared) under libFuzzer, from its seeds and regression inputs, until it has run
# FUZZ_RUNS inputs or FUZZ_SECONDS seconds, whichever comes first. Prints one summary
# line per target. A crash stops the script with libFuzzer's reproducer path
# (fuzz/artifacts/<target>/); check it in under fuzz/regressions/<target>/ with its fix.
#
# Usage: fuzz/run.sh [target...]   (default: every target)
# Env: FUZZ_RUNS (default 1000000), FUZZ_SECONDS (default 3600 per target),
#      FUZZ_SANITIZER (default none; "address" for ASan, several times slower).
set -euo pipefail

cd "$(dirname "$0")/.."
# The libFuzzer builds go under the workspace's own target dir (target/fuzz), not a
# second one in fuzz/.
fuzz_target_dir=${CARGO_TARGET_DIR:-$PWD/target}/fuzz
runs=${FUZZ_RUNS:-1000000}
seconds=${FUZZ_SECONDS:-3600}
sanitizer=${FUZZ_SANITIZER:-none}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
fi

cargo run -q -p kv-fuzz --bin kv-fuzz-seeds -- fuzz/corpus
(cd fuzz && cargo +nightly fuzz build --sanitizer "$sanitizer" --target-dir "$fuzz_target_dir")

commit=$(git rev-parse --short HEAD)
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/regressions/$t"
    log="fuzz/artifacts/$t.log"
    mkdir -p fuzz/artifacts
    (cd fuzz && nice -n 10 cargo +nightly fuzz run --sanitizer "$sanitizer" --target-dir "$fuzz_target_dir" "$t" \
        "corpus/$t" "regressions/$t" -- \
        -runs="$runs" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 \
        -print_final_stats=1) 2>&1 | tee "$log" | grep -E "^#[0-9]+.*(pulse|DONE)|Done|ERROR|panicked" || true
    if ! grep -q "^Done" "$log"; then
        echo "fuzz/run.sh: $t did not finish cleanly; see $log" >&2
        exit 1
    fi
    done_line=$(grep "^Done" "$log")
    summary+=("$t: $done_line (commit $commit, sanitizer $sanitizer)")
done
printf '%s\n' "${summary[@]}"
