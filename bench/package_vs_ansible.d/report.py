#!/usr/bin/env python3
"""Turns bench/package_vs_ansible's measurements into its section of bench/RESULTS.md.

    report.py SAMPLES_TSV META_FILE RESULTS_MD     replace our section in RESULTS_MD
    report.py SAMPLES_TSV META_FILE -              print the section only

SAMPLES_TSV: lines `tool<TAB>operation<TAB>rep<TAB>seconds`, tool in weft|ansible,
operation in install|present|remove|absent. META_FILE: `key=value` lines.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from results_section import cpu_model, markers, mem_total_gib, report_main  # noqa: E402

NAME = "package_vs_ansible"
START, END = markers(NAME)
TOOLS = ("weft", "ansible")
OPERATIONS = (
    ("install", "install: absent -> present (changed)"),
    ("present", "present again (ok)"),
    ("remove", "remove: present -> absent (changed)"),
    ("absent", "absent again (ok)"),
)


def read_samples(path):
    samples = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                tool, operation, _rep, seconds = line.rstrip("\n").split("\t")
                samples.setdefault((tool, operation), []).append(float(seconds))
    return samples


def section(samples, meta):
    lines = [
        START,
        "## package module vs ansible.builtin.package: install and remove Debian's `hello`",
        "",
        f"Measured {meta.get('date', '?')} with `{meta.get('command', 'bench/package_vs_ansible')}`.",
        "",
        f"- **Machine:** {meta.get('nproc', '?')} CPUs (`nproc`), {cpu_model()}, {mem_total_gib()},"
        f" Linux {os.uname().release}; load average at start: {meta.get('loadavg', '?')}.",
        f"- **weft:** commit `{meta.get('weft_commit', '?')}`, release build; the `package` module through"
        f" PackageKit {meta.get('packagekit_version', '?')} (apt backend) on the system bus.",
        f"- **Ansible:** ansible-core {meta.get('ansible_version', '?')} on Python"
        f" {meta.get('python_version', '?')}; `ansible.builtin.package`, `-c local`, `gather_facts: false`,"
        " pipelining on.",
        f"- **Package:** `hello` {meta.get('hello_version', '?')} from Debian's mirror (53 KB; the"
        " download is part of every install).",
        "- **Method:** each operation is one whole process timed wall-clock; within every repetition both"
        " tools run the same four operations in turn, and each result is checked (status and"
        " `/usr/bin/hello` on disk).",
        "",
        "| operation | weft median s | weft min s | Ansible median s | Ansible min s | Ansible / weft (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for operation, label in OPERATIONS:
        weft = samples.get(("weft", operation), [])
        ansible = samples.get(("ansible", operation), [])
        if not weft or not ansible:
            lines.append(f"| {label} | n/a | n/a | n/a | n/a | n/a |")
            continue
        weft_median, ansible_median = statistics.median(weft), statistics.median(ansible)
        lines.append(
            f"| {label} | {weft_median:.2f} | {min(weft):.2f} | {ansible_median:.2f} | {min(ansible):.2f}"
            f" | **{ansible_median / weft_median:.2f}x** |"
        )
    lines += [
        "",
        "Reading: Ansible's package module does not use PackageKit: it picks apt and drives"
        " python3-apt in its own process, so its cost is Python's start-up plus one apt cache load."
        " weft asks PackageKit, whose apt backend loads the apt cache again for every transaction"
        " (about a second each here): an install is three transactions (resolve installed,"
        " resolve available, install), a removal three (resolve installed, simulate, remove) and"
        " an idempotent run one. A ratio above 1 means weft was faster; the package manager's own"
        " work (download, dpkg) dominates both, so this is not the 100x of the local run.",
        "",
        f"Rerun: `{meta.get('command', 'bench/package_vs_ansible')}` from the repository root, as root"
        " (installs and removes `hello` for real).",
        END,
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    report_main(__doc__, NAME, read_samples, section)
