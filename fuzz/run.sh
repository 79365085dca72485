#!/usr/bin/env bash
# Runs the seed-corpus tests, then every fuzz target (or those in FUZZ_TARGETS) for FUZZ_SECONDS
# seconds each. `make fuzz FUZZ_SECONDS=N` calls this.
#
# Stable toolchain only: cargo-fuzz with `--sanitizer none` passes no nightly flag (libFuzzer's
# coverage hooks are the stable codegen flags -Cpasses=sancov-module and -Cllvm-args; only the
# sanitizers and -Zbuild-std need nightly), so no RUSTC_BOOTSTRAP is set here.
#
# Each target starts from the committed seeds in corpus/<target>/ (read-only) and keeps what it
# finds in target/corpus/<target>/ (not committed). A crash, a failed assertion, a timeout or an
# out-of-memory stops that target, leaves its input in artifacts/<target>/, and fails the run
# after every target has had its turn. To keep a crash input as a regression seed, copy it to
# corpus/<target>/crash-<what> once the bug is fixed.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler (libFuzzer).

set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-60}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
    echo "FUZZ_SECONDS must be a positive number of seconds, not '$seconds'" >&2
    exit 2
fi
if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 1
fi

# The committed seeds are current and each is the valid input it claims to be (tests/corpus.rs).
# A plain debug build into target/debug, apart from the instrumented one below.
# FUZZ_SEED_TESTS=0 skips the seed tests (a second, uninstrumented build): every target replays
# its committed seeds before it mutates them, and fails on one that crashes (CI does this).
if [[ ${FUZZ_SEED_TESTS:-1} != 0 ]]; then
    echo "== seed corpus (cargo test)" >&2
    cargo test --locked
fi

# No sanitizer (stable); release with debug assertions and overflow checks (cargo-fuzz's default).
# The targets are built once and their binaries run directly: `cargo fuzz run` would check the
# build again before every target.
triple=$(rustc -vV | sed -n 's/^host: //p')
build_flags=(--sanitizer none --target "$triple")
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
echo "== building the fuzz targets" >&2
# FUZZ_PROFILE=dev builds without optimisation: about half the build time for a fraction of the
# executions per second (CI's 30 s smoke runs); the default, release, is for real fuzzing.
if [[ ${FUZZ_PROFILE:-release} == dev ]]; then
    build_flags+=(--dev)
    bin=target/$triple/debug
else
    bin=target/$triple/release
fi
cargo fuzz build "${build_flags[@]}"

mkdir -p target/tmp target/logs
# The targets that read files write them here (see src/scratch.rs), not in the system temp dir.
export TMPDIR=$PWD/target/tmp

failed=()
summary=()
for target in $targets; do
    mkdir -p "target/corpus/$target" "corpus/$target" "artifacts/$target"
    echo "== $target: ${seconds} s" >&2
    started=$SECONDS
    # New inputs go to the first corpus dir; the committed seeds are only read.
    # -timeout: one input may take at most 10 s (the slowest legitimate one takes milliseconds);
    # -rss_limit_mb: libFuzzer's default, stated.
    if "$bin/$target" -artifact_prefix="artifacts/$target/" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 "target/corpus/$target" "corpus/$target" \
        >"target/logs/$target.log" 2>&1; then
        :
    else
        failed+=("$target")
        tail -n 40 "target/logs/$target.log" >&2
    fi
    # libFuzzer's final stats: executions, executions per second, and the corpus it kept.
    runs=$(grep -m1 '^stat::number_of_executed_units' "target/logs/$target.log" | awk '{print $2}' || true)
    rate=$(grep -m1 '^stat::average_exec_per_sec' "target/logs/$target.log" | awk '{print $2}' || true)
    kept=$(find "target/corpus/$target" -type f | wc -l)
    line=$(printf '%-15s %10s runs %7s exec/s %5s s  corpus %s' "$target" "${runs:-?}" "${rate:-?}" \
        "$((SECONDS - started))" "$kept")
    summary+=("$line")
    echo "   $line (log: fuzz/target/logs/$target.log)" >&2
done

echo "== summary" >&2
printf '%s\n' "${summary[@]}" >&2
if ((${#failed[@]})); then
    echo "fuzzing found problems in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "every target ran ${seconds} s without a finding" >&2
