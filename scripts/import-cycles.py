#!/usr/bin/env python3
"""Lists cycles of imports between the files of each crate: file A names an item of file B
(`use crate::b::…`, `super::b::…`, or a path written inline) while B, directly or through other
files, names one of A. `#[cfg(test)]` modules are left out. Exits 1 when there is a cycle.

Usage: scripts/import-cycles.py   (from the repository root; reads engine/, steps/, stores/,
workflows/ with their crate roots engine/src/lib.rs, steps/src/lib.rs, stores/src/lib.rs,
workflows/lib.rs)
"""
import pathlib
import re
import sys

CRATES = {
    "engine": "engine/src",
    "steps": "steps/src",
    "stores": "stores/src",
    "workflows": "workflows",
}
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\}", re.S)


def module_of(root, path):
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts and parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def without_tests(text):
    out, skip, depth = [], False, 0
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not skip and line.strip() == "#[cfg(test)]":
            skip, depth, opened = True, 0, False
            i += 1
            continue
        if skip:
            depth += line.count("{") - line.count("}")
            if "{" in line:
                opened = True
            if opened and depth <= 0:
                skip = False
            elif not opened and line.rstrip().endswith(";"):
                skip = False
            i += 1
            continue
        out.append(re.sub(r"//.*", "", line))
        i += 1
    return "\n".join(out)


def resolve(mod, kind, rest, files):
    """The file module a path names: the longest prefix of it that is a file of the crate."""
    if kind == "crate":
        base = ()
    elif kind == "super":
        base = mod[:-1]
    else:
        base = mod
    parts = [p for p in rest.split("::") if p]
    while parts and parts[0] == "super":
        base, parts = base[:-1], parts[1:]
    full = base + tuple(parts)
    for n in range(len(full), 0, -1):
        if full[:n] in files:
            return full[:n]
    return None


def edges(root):
    files = {}
    for p in sorted(pathlib.Path(root).rglob("*.rs")):
        if "tests" in p.parts or "benches" in p.parts or "vendor" in p.parts:
            continue
        files[module_of(pathlib.Path(root), p)] = p
    graph = {m: set() for m in files}
    for mod, p in files.items():
        text = without_tests(p.read_text())
        found = [(k, r) for k, r in PATH.findall(text)]
        for k, prefix, group in USE_GROUP.findall(text):
            for item in re.split(r"[,\s]+", group):
                item = item.split("::")[0].strip()
                if item and item not in ("self", "{", "}"):
                    found.append((k, f"{prefix}::{item}"))
        for kind, rest in found:
            target = resolve(mod, kind, rest, files)
            # A module naming its own descendants is not an import of a sibling.
            if target and target != mod and target[: len(mod)] != mod:
                graph[mod].add(target)
    return files, graph


def cycles(graph):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


total = 0
for crate, root in CRATES.items():
    files, graph = edges(root)
    for comp in cycles(graph):
        total += 1
        names = [str(files[m]) for m in comp]
        print(f"{crate}: " + " <-> ".join(names))
print(f"{total} import cycles", file=sys.stderr)
sys.exit(1 if total else 0)
