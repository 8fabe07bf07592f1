#!/usr/bin/env python3
"""Checks one run's output and prints its recap on one line.

    check_run.py weft    STDOUT_FILE EXPECTED_CHANGED TASKS
    check_run.py ansible STDOUT_FILE EXPECTED_CHANGED TASKS

weft:    STDOUT_FILE is the single JSON document of `weft run ... -o json`
         (schema weft.run/v1); its `recap` list is summed over nodes.
ansible: STDOUT_FILE is ansible-playbook's default output; the PLAY RECAP lines
         (`host : ok=N changed=N unreachable=N failed=N ...`) are summed.

Exits 1 with a message on stderr unless changed == EXPECTED_CHANGED, nothing
failed, was skipped or was unreachable, and all TASKS tasks ran: Ansible counts
changed tasks in `ok` (ok == TASKS); for weft, whether or not its `ok` includes the
changed ones, ok + changed >= TASKS is required.
"""

import json
import re
import sys

COUNTERS = ("ok", "changed", "failed", "skipped", "ignored", "unreachable")


def weft_recap(text):
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"weft output is not one JSON document ({err}); it starts with:\n{text[:600]}")
    schema = doc.get("schema")
    if schema != "weft.run/v1":
        print(f"warning: weft output schema is {schema!r}, expected 'weft.run/v1'", file=sys.stderr)
    recap = doc.get("recap")
    if not isinstance(recap, list) or not recap:
        raise SystemExit(f"weft output has no recap list; keys: {sorted(doc)}")
    totals = dict.fromkeys(COUNTERS, 0)
    for node in recap:
        for key in COUNTERS:
            totals[key] += int(node.get(key, 0) or 0)
    return totals


RECAP_LINE = re.compile(r"^\S+\s*:\s*((?:\w+=\d+\s*)+)$")


def ansible_recap(text):
    _, found, after = text.partition("PLAY RECAP")
    if not found:
        raise SystemExit(f"no PLAY RECAP in ansible output; it ends with:\n{text[-1500:]}")
    totals = dict.fromkeys(COUNTERS, 0)
    hosts = 0
    for line in after.splitlines()[1:]:
        match = RECAP_LINE.match(line.strip())
        if not match:
            continue
        hosts += 1
        for key, value in re.findall(r"(\w+)=(\d+)", match.group(1)):
            if key in totals:
                totals[key] += int(value)
    if not hosts:
        raise SystemExit(f"PLAY RECAP has no host lines:\n{after[:600]}")
    return totals


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("weft", "ansible"):
        raise SystemExit(__doc__)
    tool, path = sys.argv[1], sys.argv[2]
    expected, tasks = int(sys.argv[3]), int(sys.argv[4])
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    totals = weft_recap(text) if tool == "weft" else ansible_recap(text)
    line = " ".join(f"{k}={v}" for k, v in totals.items())
    problems = []
    if totals["changed"] != expected:
        problems.append(f"changed={totals['changed']}, expected {expected}")
    ran = totals["ok"] if tool == "ansible" else totals["ok"] + totals["changed"]
    if ran < tasks or (tool == "ansible" and ran != tasks):
        problems.append(f"ok={totals['ok']} does not account for all {tasks} tasks")
    for key in ("failed", "unreachable", "skipped"):
        if totals[key]:
            problems.append(f"{key}={totals[key]}")
    if problems:
        raise SystemExit(f"{tool} recap wrong ({'; '.join(problems)}): {line}")
    print(line)


if __name__ == "__main__":
    main()
