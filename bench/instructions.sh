#!/usr/bin/env bash
# The instruction yardstick (issue 11): instructions per operation under callgrind, which noise on
# a shared machine cannot move. For each operation it runs `examples/opcount.rs` at two iteration
# counts and prints (difference in instructions) / (difference in iterations), so start-up, slot
# creation, warm-up and tear-down cancel out. Only the calling thread is counted. The lease goal
# is relative (L <= 1.2 x W1 in time); under valgrind a clock read is a system call, so the leased
# count leaves out the ~20-40 instructions of the vDSO clock read it makes natively.
#
#   bench/instructions.sh              # every operation
#   bench/instructions.sh exclusive churn
#   N1=20000 N2=220000 bench/instructions.sh
#
# Needs valgrind. Takes about half a minute once opcount is built (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."

N1=${N1:-10000}
N2=${N2:-110000}
OPS=("$@")
if [ ${#OPS[@]} -eq 0 ]; then
    OPS=(exclusive shared semaphore leased churn mutex hashmap)
fi

command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed" >&2; exit 1; }
cargo build --release --quiet --example opcount
BIN=target/release/examples/opcount
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# Instructions executed by the main thread of `opcount OP N`.
count() {
    local op=$1 n=$2 file="$OUT/$1.$2"
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$file" \
        "$BIN" "$op" "$n" >/dev/null 2>"$file.log" || {
        echo "instructions.sh: opcount $op $n failed:" >&2
        cat "$file.log" >&2
        exit 1
    }
    # Thread 1's profile; `summary:` (or `totals:`) is its total instruction count.
    awk '/^(summary|totals):/ { print $2; exit }' "$file-01"
}

goal() {
    case $1 in
        exclusive | shared | semaphore) echo "<= 60" ;;
        churn) echo "<= 250" ;;
        leased) echo "(time)" ;;
        *) echo "(peer)" ;;
    esac
}

what() {
    case $1 in
        exclusive) echo "uncontended exclusive acquire+release (W1)" ;;
        shared) echo "uncontended shared acquire+release" ;;
        semaphore) echo "semaphore(4), one key (S)" ;;
        leased) echo "exclusive with a 30 s lease (L)" ;;
        churn) echo "fresh key per op, reclaimed (W4)" ;;
        mutex) echo "parking_lot::Mutex lock+unlock (F)" ;;
        hashmap) echo "std Mutex<HashMap> insert+remove" ;;
    esac
}

printf '%-10s %10s %8s  %-5s %s\n' op instr/op goal met what
for op in "${OPS[@]}"; do
    a=$(count "$op" "$N1")
    b=$(count "$op" "$N2")
    per=$(awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.1f", (b - a) / (n2 - n1) }')
    g=$(goal "$op")
    met=""
    case $g in
        "<= "*) met=$(awk -v p="$per" -v g="${g#<= }" 'BEGIN { print (p <= g) ? "yes" : "no" }') ;;
    esac
    printf '%-10s %10s %8s  %-5s %s\n' "$op" "$per" "$g" "$met" "$(what "$op")"
done
echo "(callgrind, main thread, ($N2 - $N1) iterations; goals from issue 11)"
