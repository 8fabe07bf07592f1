#!/usr/bin/env python3
"""Replaces one benchmark's section of bench/RESULTS.md, keeping the others byte for byte.

    results_section.py NAME RESULTS_MD < SECTION     (SECTION includes its own markers)

A section lies between `<!-- NAME:start -->` and `<!-- NAME:end -->`; a missing
section is appended, a missing file is created with a heading. Also what every
benchmark's report reads the same way: its `key=value` meta file and the machine.
"""

import os
import sys

HEADING = "# weft benchmark results\n"


def markers(name):
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def read_meta(path):
    meta = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.rstrip("\n").partition("=")
            if sep:
                meta[key] = value
    return meta


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def mem_total_gib():
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    except OSError:
        pass
    return "unknown RAM"


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


def report_main(doc, name, read_samples, section):
    """The command line of every bench report.py: SAMPLES_TSV META_FILE RESULTS_MD|-."""
    if len(sys.argv) != 4:
        raise SystemExit(doc)
    samples_path, meta_path, results = sys.argv[1:]
    text = section(read_samples(samples_path), read_meta(meta_path))
    if results == "-":
        sys.stdout.write(text)
    else:
        replace_section(results, name, text)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    replace_section(sys.argv[2], sys.argv[1], sys.stdin.read())
