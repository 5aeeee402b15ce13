#!/usr/bin/env python3
"""Lists production Rust functions longer than N lines (default 100), longest first.

Usage: scripts/long-functions.py [N]. Reads engine/, steps/, stores/, workflows/ (their src, not
tests/ nor benches/ nor vendor/ copies of third-party crates), skipping `#[cfg(test)]` modules. A function's length runs from its `fn`
line to the line closing its body, found by counting braces outside strings and comments.
Exits 1 when any function is longer than N, so CI can hold the line.
"""
import pathlib
import re
import sys

LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 100
ROOTS = ["engine", "steps", "stores", "workflows"]
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def strip(line, state):
    """The line without strings, chars and comments; `state` carries a block comment over."""
    out, i = [], 0
    while i < len(line):
        if state["block"]:
            end = line.find("*/", i)
            if end < 0:
                return "".join(out)
            state["block"], i = False, end + 2
            continue
        two = line[i : i + 2]
        if two == "//":
            break
        if two == "/*":
            state["block"], i = True, i + 2
            continue
        c = line[i]
        if c == '"':
            j = i + 1
            while j < len(line) and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            i = j + 1
            continue
        if c == "'" and re.match(r"'(\\.|[^\\'])'", line[i:]):
            i += len(re.match(r"'(\\.|[^\\'])'", line[i:]).group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def functions(path):
    lines = path.read_text().splitlines()
    state = {"block": False}
    code = [strip(l, state) for l in lines]
    skip_until = -1
    for n, line in enumerate(lines):
        if n <= skip_until:
            continue
        if line.strip() == "#[cfg(test)]":
            skip_until = close(code, n + 1)
            continue
        m = FN.match(code[n])
        if not m:
            continue
        end = close(code, n)
        if end is not None:
            yield m.group(5), n + 1, end - n + 1


def close(code, start):
    depth, opened = 0, False
    for k in range(start, len(code)):
        for c in code[k]:
            if c == "{":
                depth, opened = depth + 1, True
            elif c == "}":
                depth -= 1
                if opened and depth == 0:
                    return k
        if not opened and code[k].rstrip().endswith(";"):
            return None
    return None


found = []
for root in ROOTS:
    for p in sorted(pathlib.Path(root).rglob("*.rs")):
        if "tests" in p.parts or "benches" in p.parts or "vendor" in p.parts:
            continue
        for name, line, length in functions(p):
            if length > LIMIT:
                found.append((length, f"{p}:{line}", name))
for length, where, name in sorted(found, reverse=True):
    print(f"{length:5} {where} {name}")
print(f"{len(found)} functions longer than {LIMIT} lines", file=sys.stderr)
sys.exit(1 if found else 0)
