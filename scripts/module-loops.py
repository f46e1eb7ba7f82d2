#!/usr/bin/env python3
"""Import loops between the modules of each crate in the workspace (cargo itself refuses loops
between crates).

A module is a file (`src/a/b.rs` or `src/a/b/mod.rs` is `a::b`). An edge a -> b is any path in
a's code that names `crate::b...`, `self::...` or `super::...` (any depth) resolving to b, other
than a's own ancestors (a child naming its parent module is how Rust nests, not a loop). Test
code is left out: everything from `#[cfg(test)] mod tests {` to the end of a file, and the files
of `#[cfg(test)] mod x;` modules. Two levels are checked: files, and the top-level modules
(directories) they belong to. Every strongly connected group of two or more is printed; the
exit status is 1 if there is any. Usage: scripts/module-loops.py [CRATE_DIR...] (default:
every crate)."""
import os, re, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = ["shared/protocol", "shared/telemetry", "shared/media", "shared/nats", "shared/storage", "shared", "services/splitter", "services/scheduler",
          "services/encoder", "services/merger", "."]

def modules(src):
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            mods[tuple(rel)] = os.path.join(dirpath, f)
    return mods

def code_of(path):
    text = open(path).read()
    # Test modules are not part of the design's layering.
    m = re.search(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)
    if m:
        text = text[: m.start()]
    # Comments and strings name modules without using them.
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text

def resolve(mods, parts):
    """The longest module prefix of `parts` that is a module of the crate."""
    for n in range(len(parts), 0, -1):
        if tuple(parts[:n]) in mods:
            return tuple(parts[:n])
    return None

def is_test_only(mods, mod):
    parent = mods.get(mod[:-1]) if mod else None
    if not mod or parent is None:
        return False
    return re.search(r"#\[cfg\(test\)\]\s*mod " + re.escape(mod[-1]) + r"\s*;", open(parent).read()) is not None

def edges(mods):
    out = {m: set() for m in mods}
    for mod, path in mods.items():
        if is_test_only(mods, mod):
            continue
        text = code_of(path)
        # `use crate::{a, b::c}` groups: flatten the first level.
        for g in re.finditer(r"\bcrate::\{([^}]*)\}", text):
            for item in g.group(1).split(","):
                parts = [p for p in re.findall(r"[a-z_][a-z0-9_]*", item.split(" as ")[0])]
                t = resolve(mods, parts)
                if t and t != mod and t != ():
                    out[mod].add(t)
        for p in re.finditer(r"\bcrate((?:::[a-z_][a-z0-9_]*)+)", text):
            parts = p.group(1).strip(":").split("::")
            t = resolve(mods, parts)
            if t and t != mod and t != ():
                out[mod].add(t)
        # `self::x` is relative to the module itself, `super::` (repeated) to its ancestors.
        for p in re.finditer(r"\b((?:super::)+|self::)([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text):
            ups = p.group(1).count("super::")
            base = list(mod[: len(mod) - ups]) if ups else list(mod)
            parts = base + p.group(2).split("::")
            t = resolve(mods, parts)
            if t and t != mod and t != () and t != tuple(mod[: len(t)]):
                out[mod].add(t)
    return out

def sccs(graph):
    index, low, stack, on, res, i = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1:
                res.append(comp)
    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return res

def top(graph):
    """The same graph between top-level modules (directories) of the crate."""
    t = {}
    for a, bs in graph.items():
        if not a:
            continue
        t.setdefault(a[:1], set())
        for b in bs:
            if b and b[:1] != a[:1]:
                t[a[:1]].add(b[:1])
                t.setdefault(b[:1], set())
    return t

def main():
    crates = sys.argv[1:] or CRATES
    found = 0
    for c in crates:
        src = os.path.join(ROOT, c, "src")
        if not os.path.isdir(src):
            continue
        mods = modules(src)
        g = edges(mods)
        for level, graph in (("module", top(g)), ("file", g)):
            for comp in sccs(graph):
                found += 1
                names = sorted("::".join(m) for m in comp)
                print(f"{c}: {level} loop: {' <-> '.join(names)}")
    print(f"{found} loop(s)")
    sys.exit(1 if found else 0)

main()
