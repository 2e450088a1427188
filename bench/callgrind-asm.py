#!/usr/bin/env python3
"""Instructions per operation, instruction by instruction: joins a callgrind profile made with
`--dump-instr=yes` with `objdump -d -l` of the same binary (build with debug line tables, e.g.
`cargo build --release --example opcount --config 'profile.release.package.leasehold.debug=1'`).

    valgrind --tool=callgrind --separate-threads=yes --dump-instr=yes \
        --callgrind-out-file=/tmp/cg target/release/examples/opcount exclusive 1000000
    bench/callgrind-asm.py /tmp/cg-01 target/release/examples/opcount 1000000 [MIN]

Prints every instruction executed at least MIN (default 0.5) times per operation: count per op,
address, source file:line, instruction, function. Self cost only (a call's inclusive cost is not
added to the call instruction), so the column sums to instructions per op.
"""
import collections
import re
import subprocess
import sys


def self_costs(path):
    """Self cost per instruction address from a callgrind file (compressed positions allowed)."""
    cost = collections.Counter()
    positions = ['instr', 'line']
    last = [0, 0]
    after_calls = False
    with open(path) as f:
        for ln in f:
            ln = ln.rstrip('\n')
            if ln.startswith('positions:'):
                positions = ln.split()[1:]
                last = [0] * len(positions)
                continue
            if ln.startswith('calls='):
                after_calls = True  # the next cost line is the call's inclusive cost
                continue
            if not ln or not (ln[0].isdigit() or ln[0] in '+-*'):
                continue
            parts = ln.split()
            for i, p in enumerate(parts[:len(positions)]):
                if p == '*':
                    continue
                last[i] = last[i] + int(p, 0) if p[0] in '+-' else int(p, 0)
            if after_calls:
                after_calls = False
                continue
            if len(parts) > len(positions):
                cost[last[0]] += int(parts[len(positions)])
    return cost


def disassembly(binary):
    out = subprocess.run(['objdump', '-d', '-l', '--no-show-raw-insn', '-C', binary],
                         capture_output=True, text=True, check=True).stdout
    insn, fn, src = {}, '', ''
    for l in out.split('\n'):
        m = re.match(r'^\s*([0-9a-f]+):\s+(.*)$', l)
        if m:
            insn[int(m.group(1), 16)] = (fn, src, m.group(2))
        elif re.match(r'^[0-9a-f]+ <.*>:$', l):
            fn = l.split('<', 1)[1][:-2]
        elif l.startswith('/'):
            src = l.split('/')[-1]
    return insn


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, binary, ops = sys.argv[1], sys.argv[2], float(sys.argv[3])
    least = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
    cost, insn = self_costs(path), disassembly(binary)
    shown = 0.0
    for a in sorted(cost):
        per = cost[a] / ops
        if per >= least and a in insn:
            fn, src, text = insn[a]
            shown += per
            print(f'{per:7.2f} {a:8x} {src:28.28s} {text:50.50s} {fn[:70]}')
    print(f'{shown:7.1f} per op shown ({sum(cost.values()) / ops:.1f} in all)')


if __name__ == '__main__':
    main()
