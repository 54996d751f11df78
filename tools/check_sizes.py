#!/usr/bin/env python3
"""Size limits of src/, kernels/ and tools/: no file over 800 lines, no function over 120 lines.

A function is a brace block at namespace or class level whose header has a parameter list
(lambdas and blocks inside a function count toward it). Comments and string literals
(raw strings included) are skipped. Exit status 1 lists every file or function over its limit.

  check_sizes.py DIR... [--max-file 800] [--max-function 120]
"""
import argparse
import os
import re
import sys

CONTROL = re.compile(r"^\s*(if|for|while|switch|catch|do|else|try)\b")
SCOPE = re.compile(r"\b(namespace|class|struct|union|enum)\b[^()]*$")


def strip(text):
    """The text with comments and string/char literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "R" and text.startswith('R"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'R"([^(\s]*)\(', text[i:])
            if not m:
                out.append(c)
                i += 1
                continue
            end = text.find(")" + m.group(1) + '"', i)
            j = n if end < 0 else end + len(m.group(1)) + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c in "\"'":
            if c == "'" and i > 0 and text[i - 1].isalnum():  # digit separator 1'000
                out.append(" ")
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(text):
    """(name, first line, line count) of every function body at namespace or class level."""
    s = strip(text)
    stack = []  # (kind, start offset, header)
    last = 0    # where the current statement/header began
    found = []
    for i, c in enumerate(s):
        if c == "{":
            header = s[last:i].strip()
            enclosing = [k for k, _, _ in stack]
            at_top = all(k == "scope" for k in enclosing)
            if at_top and SCOPE.search(header.split("(")[0] if "(" in header else header) and "(" not in header:
                kind = "scope"
            elif at_top and "(" in header and ")" in header and not CONTROL.match(header) and not header.endswith("="):
                kind = "function"
            else:
                kind = "block"
            stack.append((kind, i, header))
            last = i + 1
        elif c == "}":
            if stack:
                kind, start, header = stack.pop()
                if kind == "function":
                    first = s.count("\n", 0, start) + 1
                    lines = s.count("\n", start, i) + 1
                    name = re.sub(r"\s+", " ", header.split("(")[0]).split(" ")[-1]
                    found.append((name, first, lines))
            last = i + 1
        elif c == ";":
            last = i + 1
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--max-file", type=int, default=800)
    ap.add_argument("--max-function", type=int, default=120)
    a = ap.parse_args()
    errors = []
    for d in a.dirs:
        for dirpath, _, files in os.walk(d):
            for fn in sorted(files):
                if not fn.endswith((".h", ".cpp")):
                    continue
                path = os.path.join(dirpath, fn)
                text = open(path, encoding="utf-8", errors="replace").read()
                n = text.count("\n")
                if n > a.max_file:
                    errors.append(f"{path}: {n} lines, more than {a.max_file}: split it along its sections")
                for name, first, lines in functions(text):
                    if lines > a.max_function:
                        errors.append(f"{path}:{first}: function '{name}' has {lines} lines, more than "
                                      f"{a.max_function}: split it")
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"check_sizes: {len(errors)} file(s) or function(s) over the limits", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
