#!/usr/bin/env python3
"""Checks every #include "..." of src/ and kernels/ against the layer graph.

The graph comes from src/CMakeLists.txt (ranklm_module ... DEPS ...), written by CMake as one
line per module: "name: dep dep ...". A file of module M may include headers of M itself and
of the modules M declares as direct dependencies; nothing else of src/ (a module reached only
through another one is that one's business: declare it to include it).
kernels/ includes nothing of src/ at all. A module that appears in src/ but not in the graph
is an error too (every directory is a library). Exit status 1 lists every violation as
"file:line: module 'a' includes 'b/x.h' (module 'b'), which 'a' may not depend on".

  check_layers.py --layers BUILD/layers.txt --root REPO [--src DIR] [--kernels DIR]
"""
import argparse
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


def read_graph(path):
    graph = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            name, _, deps = line.partition(":")
            graph[name.strip()] = set(deps.split())
    return graph


def closure(graph, name, seen=None):
    seen = set() if seen is None else seen
    for d in graph.get(name, ()):
        if d not in seen:
            seen.add(d)
            closure(graph, d, seen)
    return seen


def cycles(graph):
    """Modules that reach themselves through their dependencies."""
    return sorted(m for m in graph if m in closure(graph, m))


def check(graph, src, kernels):
    errors = []
    modules = set(os.listdir(src)) if os.path.isdir(src) else set()
    modules = {m for m in modules if os.path.isdir(os.path.join(src, m))}
    for m in sorted(modules - set(graph)):
        errors.append(f"{os.path.join(src, m)}: directory '{m}' is not a module of the layer graph "
                      f"(add it with ranklm_module in src/CMakeLists.txt)")
    for m in cycles(graph):
        errors.append(f"layer graph: module '{m}' depends on itself through {sorted(graph[m])}")
    roots = [(src, None)]
    if kernels:
        roots.append((kernels, "kernels"))
    for root, fixed in roots:
        for dirpath, _, files in os.walk(root):
            for fn in sorted(files):
                if not fn.endswith((".h", ".cpp", ".hpp", ".cc")):
                    continue
                path = os.path.join(dirpath, fn)
                rel = os.path.relpath(path, root).split(os.sep)
                module = fixed or (rel[0] if len(rel) > 1 else None)
                if module is None:
                    continue
                allowed = set(graph.get(module, ())) | {module}
                with open(path, encoding="utf-8", errors="replace") as f:
                    for no, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        inc = m.group(1)
                        if "/" not in inc:
                            if fixed == "kernels" or module is None:
                                continue  # a header next to this file
                            errors.append(f"{path}:{no}: '{inc}': include headers of src/ by their module path")
                            continue
                        target = inc.split("/", 1)[0]
                        if fixed == "kernels" and target != "kernels":
                            errors.append(f"{path}:{no}: kernels include '{inc}': the kernels library includes "
                                          f"nothing of src/")
                        elif fixed != "kernels" and target not in graph and target not in modules:
                            continue  # not one of ours (a system header in quotes)
                        elif target not in allowed:
                            errors.append(f"{path}:{no}: module '{module}' includes '{inc}' (module '{target}'), "
                                          f"which '{module}' may not depend on; allowed: {sorted(allowed)}")
    return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--src")
    ap.add_argument("--kernels")
    a = ap.parse_args()
    src = a.src or os.path.join(a.root, "src")
    kernels = a.kernels or os.path.join(a.root, "kernels")
    graph = read_graph(a.layers)
    errors = check(graph, src, kernels)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"check_layers: {len(errors)} include(s) break the layer graph (docs/ARCHITECTURE.md, Layers)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
