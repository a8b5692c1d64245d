#!/usr/bin/env python3
"""run_golden.py: golden tests for the SGL compiler (Lua-style "what a
function compiles to").

Each case is NAME.sgl in a group directory, with expectations next to it:
  NAME.trace   `sglc dump --graph --trace -O2 --verify NAME.sgl`: the graph
               as lowered, then after every pass that changed it
  NAME.bc      `sglc dump --bytecode --verify` at -O0 and at -O1 (one
               section each)
  NAME.prefix  (group "prefix") the "fn" and "prefix:" lines of
               `sglc dump --graph -O1 --verify NAME.sgl`: each function's
               prefix hint
Commands run inside the group directory with NO_COLOR=1.

usage: run_golden.py SGLC GROUP_DIR [--update]
  --update  rewrite the expectation files from the current output (then
            review the diff by eye before committing); creates missing ones.
Prints "N passed, N failed"; exit status 1 if any case failed.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from golden import case_names, check_expectation, finish, run_sglc  # noqa: E402


def run(sglc, args, cwd):
    rc, out, err = run_sglc(sglc, args, cwd)
    if rc != 0:
        out += f"exit: {rc}\n" + err
    return out


def views(sglc, name, group):
    f = name + ".sgl"
    if os.path.basename(os.path.normpath(group)) == "prefix":
        out = run(sglc, ["dump", "--graph", "-O1", "--verify", f], group)
        keep = [l for l in out.splitlines(True) if l.startswith("fn ") or l.startswith("  prefix:")
                or l.startswith("exit:")]
        return {".prefix": "".join(keep)}
    trace = run(sglc, ["dump", "--graph", "--trace", "-O2", "--verify", f], group)
    bc = "== -O0 ==\n" + run(sglc, ["dump", "--bytecode", "-O0", "--verify", f], group)
    bc += "\n== -O1 ==\n" + run(sglc, ["dump", "--bytecode", "-O1", "--verify", f], group)
    return {".trace": trace, ".bc": bc}


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    sglc = os.path.abspath(sys.argv[1])
    group = sys.argv[2]
    update = "--update" in sys.argv[3:]
    passed = failed = 0
    names = case_names(group)
    for name in names:
        ok = True
        for ext, got in views(sglc, name, group).items():
            ok = check_expectation(name, os.path.join(group, name + ext), got, update) and ok
        if ok:
            passed += 1
        else:
            failed += 1
    return finish(group, passed, failed)


if __name__ == "__main__":
    sys.exit(main())
