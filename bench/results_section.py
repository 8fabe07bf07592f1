#!/usr/bin/env python3
"""Replaces one benchmark's section of bench/RESULTS.md, keeping the others byte for byte.

    results_section.py NAME RESULTS_MD < SECTION     (SECTION includes its own markers)

A section lies between `<!-- NAME:start -->` and `<!-- NAME:end -->`; a missing
section is appended, a missing file is created with a heading.
"""

import os
import sys

HEADING = "# weft benchmark results\n"


def markers(name):
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(path, name, text):
    start_marker, end_marker = markers(name)
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        old = HEADING
    start, end = old.find(start_marker), old.find(end_marker)
    if start != -1 and end != -1 and end > start:
        after = old[end + len(end_marker):]
        if after.startswith("\n"):
            after = after[1:]
        new = old[:start] + text + after
    elif start != -1 or end != -1:
        raise SystemExit(f"{path}: only one of the {start_marker} / {end_marker} markers is present; fix it by hand")
    else:
        new = old if old.endswith("\n") else old + "\n"
        new += "\n" + text
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    replace_section(sys.argv[2], sys.argv[1], sys.stdin.read())
