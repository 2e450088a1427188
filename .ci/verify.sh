#!/usr/bin/env bash
# Verification beyond the unit tests: the loom models, then a short fuzz run of each target.
# Called by .ci/run; runs on its own from any directory. Exits non-zero if a loom model or a
# fuzz target fails. Everything is bounded so that the whole script stays well under 10 minutes
# on the 2-core CI machine, builds included.
#
# Steps, bounds and why (times measured on the 2-core development machine, shared with other
# builds, from a fresh clone with empty target directories; see the numbers below):
#
#   1. Loom models (loom-tests/), release mode, LOOM_MAX_PREEMPTIONS=2.
#      Bound 2 is what the models are written for (tokio uses the same in CI): every
#      bug these models were shown to catch (a release that forgets to wake waiters, tokens that
#      restart after reclamation, a renewal racing a release without the renewer's gate, a release
#      that does not wake a waiting upgrader, a waiter granted a slot reborn for another key) is
#      found at bound 2, and the suite's 38 models (the script fails on fewer) run in about 27 s
#      (the exclusion models take 21 s of it; 67 s with the build, from a clean clone). Bound 3
#      takes minutes (the three-thread exclusion models dominate): run it by hand after changing
#      the slot protocols:
#        cd loom-tests && RUSTFLAGS="--cfg leasehold_loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release
#      Release mode: the models run some 75,000 executions in all at bound 2, many times faster
#      than in debug. Own target directory: a different RUSTFLAGS would otherwise rebuild the crate's
#      normal build (and the normal build the loom one) each time.
#      Here (clean-clone CI run, 2 cores): the loom step took 67 s, build included.
#
#   2. Fuzz smoke run, only if `cargo +nightly` works (cargo-fuzz needs nightly for the
#      sanitizer flags); without nightly it says so and skips, without failing. cargo-fuzz is
#      installed if missing (`cargo install cargo-fuzz --locked`, kept in ~/.cargo/bin, 45 s
#      once). Each target runs FUZZ_SECONDS (20 s) from its committed seed corpus (fuzz/corpus/),
#      with AddressSanitizer and debug assertions (cargo-fuzz's defaults), writing new inputs to a
#      scratch corpus so the committed seeds do not grow. 20 s is a regression check (the seeds
#      replay the coverage of the long runs, ~10 million executions per target by hand), not a
#      search: it catches a change that breaks what the seeds reach, in about a minute and a half
#      for all four targets. Longer runs are by hand:
#        cd fuzz && cargo +nightly fuzz run ops -- -max_total_time=600
#      Here: build 39 s, runs 4 x 21-22 s.
#
# Measured on the last clean-clone CI run here (cargo-fuzz installed by the script): 219 s in all
# (VERIFY_TIMINGS: loom 67 s, cargo-fuzz install 27 s, fuzz build 39 s, fuzz runs 4 x 21-22 s).
# The script prints VERIFY_TIMINGS at the
# end of every run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
LOOM_TARGET_DIR=${LEASEHOLD_LOOM_TARGET_DIR:-$root/target/loom}
FUZZ_TARGET_DIR=${LEASEHOLD_FUZZ_TARGET_DIR:-$root/fuzz/target}
FUZZ_TARGETS=(ops timer_wheel state_word matrix)

started=$SECONDS
timings=()
step() { printf '\n==> verify: %s (at %ss)\n' "$1" "$((SECONDS - started))"; }
took() { timings+=("$1 $(($SECONDS - $2))s"); }

step "loom models (release, LOOM_MAX_PREEMPTIONS=2)"
t=$SECONDS
loom_log=$(mktemp)
trap 'rm -f "$loom_log"' EXIT
(
    cd loom-tests
    RUSTFLAGS="--cfg leasehold_loom" CARGO_TARGET_DIR="$LOOM_TARGET_DIR" LOOM_MAX_PREEMPTIONS=2 \
        cargo test --release --tests
) 2>&1 | tee "$loom_log"
loom_passed=$(awk '/^test result: ok\./ { n += $4 } END { print n + 0 }' "$loom_log")
if [ "$loom_passed" -lt 38 ]; then
    echo "verify: expected at least 38 loom models to pass, counted $loom_passed" >&2
    exit 1
fi
took "loom" "$t"

fuzz_ran=0
step "fuzz smoke run (${FUZZ_SECONDS}s per target)"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "verify: no nightly toolchain (cargo +nightly fails): skipping the fuzz smoke run."
    echo "verify: install one with 'rustup toolchain install nightly' to run it."
else
    if ! cargo fuzz --version >/dev/null 2>&1; then
        t=$SECONDS
        cargo install cargo-fuzz --locked
        took "cargo-fuzz install" "$t"
    fi
    cd fuzz
    t=$SECONDS
    cargo +nightly fuzz build --target-dir "$FUZZ_TARGET_DIR"
    took "fuzz build" "$t"
    scratch=$(mktemp -d)
    trap 'rm -f "$loom_log"; rm -rf "$scratch"' EXIT
    for target in "${FUZZ_TARGETS[@]}"; do
        t=$SECONDS
        mkdir -p "$scratch/$target"
        # New inputs go to the scratch corpus (the first directory); the seeds are only read.
        # -timeout: an input that takes 10 s is a hang, and a failure.
        status=0
        cargo +nightly fuzz run "$target" --target-dir "$FUZZ_TARGET_DIR" "$scratch/$target" "corpus/$target" -- \
            -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 >"$scratch/$target.log" 2>&1 ||
            status=$?
        if [ "$status" -ne 0 ]; then
            # The panic (with its reproducer) or the sanitizer's report, then libFuzzer's ending.
            first=$(grep -n -m1 -E 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$scratch/$target.log" | cut -d: -f1)
            if [ -n "$first" ]; then
                tail -n +"$first" "$scratch/$target.log" | head -n 150
                echo "[...]"
            fi
            tail -n 30 "$scratch/$target.log"
            echo "verify: fuzz target $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
            exit 1
        fi
        grep -E '^(Done|INFO: seed corpus)|^stat::number_of_executed_units' "$scratch/$target.log" || true
        fuzz_ran=$((fuzz_ran + 1))
        took "fuzz $target" "$t"
    done
    cd "$root"
fi

printf '\nVERIFY_TIMINGS: %s; total %ss\n' "$(IFS=,; echo "${timings[*]}")" "$((SECONDS - started))"
echo "verify: $((loom_passed + fuzz_ran)) passed, 0 failed"
