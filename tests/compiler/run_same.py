#!/usr/bin/env python3
"""run_same.py: optimization must not change what a program does.

Runs every .sgl with a `main` block in the given directories with
`sglc run --fake` (the VM's deterministic fake engine) at -O0, -O1 and -O2
and compares stdout, stderr and the exit status. -O2 is left out for files
with @reorder, whose prompt text the reorder pass may legitimately change.

usage: run_same.py SGLC DIR...
Prints "N passed, N failed"; exit status 1 if any program differed.
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from golden import finish, run_sglc  # noqa: E402


def run(sglc, level, path):
    return run_sglc(sglc, ["run", f"-O{level}", "--fake", os.path.basename(path)],
                    os.path.dirname(path))


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    sglc = os.path.abspath(sys.argv[1])
    passed = failed = 0
    for d in sys.argv[2:]:
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if not name.endswith(".sgl"):
                continue
            path = os.path.join(d, name)
            with open(path) as fh:
                src = fh.read()
            if not re.search(r"^main\s*\{", src, re.M):
                continue
            levels = [0, 1] if "@reorder" in src else [0, 1, 2]
            results = {lv: run(sglc, lv, path) for lv in levels}
            base = results[0]
            bad = [lv for lv in levels if results[lv] != base]
            if bad:
                failed += 1
                for lv in bad:
                    print(f"FAIL {path}: -O{lv} differs from -O0")
                    print(f"  -O0: exit {base[0]}\n{base[1]}{base[2]}")
                    print(f"  -O{lv}: exit {results[lv][0]}\n{results[lv][1]}{results[lv][2]}")
            else:
                passed += 1
    return finish("run_same", passed, failed)


if __name__ == "__main__":
    sys.exit(main())
