#!/usr/bin/env python3
"""The layer check: every `crate::` path in src/ must point down the layers, and no module may
import itself in a circle. Run by `.ci/run`; exits 1 and names every offending import on failure.

Layers, top to bottom (a file's layer is its top folder under src/; ARCHITECTURE.md says why):

    lib.rs       the crate root: declares the layers and re-exports the public API
    api          the public façade: LockManager, Builder, Request, AcquireFuture, LockGuard, Fenced
    observe      metrics, events, audit, inspect          (siblings: neither imports the other)
    expiry       the expiry driver and the reaper loop
    engine       table, shards, slots, words, records, wait queue, sweep, wheel registration
    vocab        Mode, Owner, FenceToken, LockError, ConfigError, MAX_UNITS
    primitives   sync shim, clocks, timer wheel, counters

Rules:
  1. An import from layer A to layer B is allowed only when A is above B (or A == B).
  2. No path names the crate root's re-exports (`crate::LockManager`): code names where a thing
     lives, so that rule 1 sees the real arrow (doc links may use the root; comments are skipped).
  3. No circle among modules (A imports B imports ... A), inside a layer or across.
  4. No file over 600 lines, except the ones listed in ONE_CONCEPT with the reason.

Test modules (`#[cfg(test)] mod ... { }`) are checked like the rest.
"""
import os
import re
import sys

RANK = {"api": 5, "observe": 3, "expiry": 3, "engine": 2, "vocab": 1, "primitives": 0}
MAX_LINES = 600
ONE_CONCEPT = {
    "engine/slot.rs": "one slot's protocols: claim, release, renew, force-end, queue flags",
    "engine/word.rs": "the state word's layout and every pure transition of it, with their exhaustive tests",
}


def modules(root):
    mods = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            if f.endswith(".rs"):
                p = os.path.join(d, f)
                rel = os.path.relpath(p, root)[:-3].split(os.sep)
                if rel[-1] in ("mod", "lib", "main"):
                    rel = rel[:-1]
                mods[tuple(rel)] = p
    return mods


def strip_comments(src):
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    src = re.sub(r'"(?:\\.|[^"\\])*"', '""', src)  # string literals (a path inside one is no import)
    return re.sub(r"//[^\n]*", "", src)


def paths(src):
    """Every crate:: path, with `use crate::a::{b::C, d}` groups expanded (one level is enough to
    find the module an import lands in)."""
    found = []
    for m in re.finditer(r"\bcrate::((?:\w+::)*)\{([^;]*?)\}\s*;", src, flags=re.S):
        prefix = m.group(1)
        body = re.sub(r"\{[^{}]*\}", "", m.group(2))
        for part in body.split(","):
            part = part.strip().split(" as ")[0].strip()
            if part and part != "self":
                found.append((prefix + part).split("::"))
            elif part == "self":
                found.append(prefix.rstrip(":").split("::"))
    for m in re.finditer(r"\bcrate::(\w+(?:::\w+)*)", src):
        found.append(m.group(1).split("::"))
    return found


def resolve(parts, mods):
    """The longest module prefix of a path, or None for a root re-export / root item."""
    for n in range(len(parts), 0, -1):
        if tuple(parts[:n]) in mods:
            return tuple(parts[:n])
    return None


def main(root):
    mods = modules(root)
    errors = []
    edges = {m: set() for m in mods}
    for mod, path in sorted(mods.items()):
        rel = os.path.relpath(path, root)
        src = strip_comments(open(path, encoding="utf-8").read())
        lines = open(path, encoding="utf-8").read().count("\n")
        short = rel.replace(os.sep, "/")
        if lines > MAX_LINES and short not in ONE_CONCEPT:
            errors.append(f"{short}: {lines} lines (over {MAX_LINES}; split it, or list it in ONE_CONCEPT with a reason)")
        here = mod[0] if mod else None
        for parts in paths(src):
            target = resolve(parts, mods)
            if target is None or target == ():
                errors.append(f"{short}: `crate::{'::'.join(parts)}` names the crate root; name the module it lives in")
                continue
            if target != mod and target[: len(mod)] != mod:
                edges[mod].add(target)
            there = target[0]
            if here is None or here == there:
                continue
            if here not in RANK or there not in RANK:
                errors.append(f"{short}: `crate::{'::'.join(parts)}`: folder {here!r} or {there!r} is in no layer (add it to RANK)")
            elif RANK[here] <= RANK[there]:
                errors.append(
                    f"{short}: `crate::{'::'.join(parts)}` points from {here} up (or across) to {there}"
                )
    # Rule 3: circles (Tarjan's strongly connected components over the module graph).
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    for c in sccs:
        errors.append("import circle: " + " <-> ".join("::".join(m) or "lib" for m in c))
    for e in sorted(set(errors)):
        print("layers: " + e)
    arrows = sum(len(v) for v in edges.values())
    print(f"layers: {len(mods)} modules, {arrows} arrows, {len(sccs)} circles, {len(set(errors))} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")))
