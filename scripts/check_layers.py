#!/usr/bin/env python3
"""Checks the source layout CONTRIBUTING.md promises: no import circle between modules, r2r
imported only under src/ros/ (and by the ROS binaries), and no source file over 600 lines outside
tests. Prints each problem and exits 1 if there is any.

A module's `use` of its own children (re-exports, a facade) is not counted as a dependency, so a
parent that re-exports its children and children that use the parent's error type are no circle;
two sibling modules that import each other are.

    scripts/check_layers.py [ROOT]
"""

import re
import sys
from pathlib import Path

MAX_LINES = 600
USE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.M)


def modules(src: Path) -> dict[tuple[str, ...], Path]:
    """Library modules by path (`("model", "vla")`), tests and binaries left out."""
    found = {}
    for f in sorted(src.rglob("*.rs")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[0] == "bin" or parts[-1] == "tests":
            continue
        if parts[-1] in ("mod", "lib"):
            parts = parts[:-1]
        found[tuple(parts)] = f
    return found


def use_paths(text: str) -> list[str]:
    """Every path a file's `use` declarations name, groups expanded one level deep per brace."""
    out = []

    def expand(prefix: str, body: str):
        depth, item, items = 0, "", []
        for ch in body:
            depth += ch == "{"
            depth -= ch == "}"
            if ch == "," and depth == 0:
                items.append(item)
                item = ""
            else:
                item += ch
        items.append(item)
        for it in filter(None, items):
            if it == "self":
                out.append(prefix)
            elif "::{" in it:
                head, rest = it.split("::{", 1)
                expand(f"{prefix}::{head}", rest[:-1])
            else:
                out.append(f"{prefix}::{it}")

    for decl in USE.findall(text):
        decl = re.sub(r"\s+", "", decl)
        if "::{" in decl:
            head, rest = decl.split("::{", 1)
            expand(head, rest[:-1])
        else:
            out.append(decl)
    return out


def resolve(module: tuple[str, ...], path: str, known) -> tuple[str, ...] | None:
    """The deepest known module a `use` path from `module` points into; None outside the crate."""
    segs = path.split("::")
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] in ("super", "self"):
        base = list(module)
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
        if segs and segs[0] == "self":
            segs = segs[1:]
    elif (*module, segs[0]) in known:
        base = list(module)
    else:
        return None
    for s in segs:
        if (*base, s) not in known:
            break
        base.append(s)
    return tuple(base)


def cycles(graph: dict) -> list[list]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def problems(root: Path) -> list[str]:
    src = root / "src"
    known = modules(src)
    graph, out = {}, []
    for module, path in known.items():
        text = path.read_text()
        for used in use_paths(text):
            target = resolve(module, used, known)
            if target is None or target == module or target[: len(module)] == module:
                continue
            graph.setdefault(module, set()).add(target)
        if re.search(r"\br2r::", text) and module[:1] != ("ros",):
            out.append(f"{path.relative_to(root)}: imports r2r outside src/ros/")
        lines = text.count("\n")
        if lines > MAX_LINES:
            out.append(f"{path.relative_to(root)}: {lines} lines (over {MAX_LINES}): split it")
    name = lambda m: "::".join(m) or "crate"  # noqa: E731
    for comp in cycles(graph):
        edges = [f"{name(a)} -> {name(b)}" for a in comp for b in sorted(graph.get(a, ())) if b in comp]
        out.append(f"import circle among {', '.join(map(name, comp))}: {'; '.join(edges)}")
    return out


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    found = problems(root)
    for p in found:
        print(p)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
