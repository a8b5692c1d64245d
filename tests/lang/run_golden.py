#!/usr/bin/env python3
"""run_golden.py: golden tests for the SGL front end (jq-style).

Each case is NAME.sgl in a cases/ group directory, with its expectation
next to it:
  NAME.ast  exact stdout of `sglc dump --ast NAME.sgl`
  NAME.err  exact stderr of `sglc check NAME.sgl` followed by "exit: N"
Commands run inside the group directory with NO_COLOR=1, so paths in
diagnostics are the bare file names. A case may have both files. A first
line "# sglc-args: ARGS" adds ARGS (split on spaces) to both commands.

usage: run_golden.py SGLC GROUP_DIR [--update]
  --update  rewrite the expectation files from the current output (then
            review the diff by eye before committing). In a group named
            "ast" a missing .ast is created; a missing .err always is.
Prints "N passed, N failed"; exit status 1 if any case failed.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from golden import case_names, check_expectation, finish, run_sglc  # noqa: E402


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    sglc = os.path.abspath(sys.argv[1])
    group = sys.argv[2]
    update = "--update" in sys.argv[3:]
    is_ast_group = os.path.basename(os.path.normpath(group)) == "ast"
    passed = failed = 0
    names = case_names(group)
    for name in names:
        ast_file = os.path.join(group, name + ".ast")
        err_file = os.path.join(group, name + ".err")
        want_ast = os.path.exists(ast_file) or (update and is_ast_group)
        want_err = os.path.exists(err_file) or update
        if not want_ast and not want_err:
            print(f"FAIL {name}: no .ast or .err expectation file")
            failed += 1
            continue
        ok = True
        checks = []
        extra = []
        with open(os.path.join(group, name + ".sgl"), "rb") as f:
            first = f.readline().decode("utf-8", "replace")
        if first.startswith("# sglc-args:"):
            extra = first[len("# sglc-args:"):].split()
        if want_ast:
            rc, out, _ = run_sglc(sglc, ["dump", "--ast"] + extra + [name + ".sgl"], group)
            checks.append((ast_file, out))
        if want_err:
            rc, _, err = run_sglc(sglc, ["check"] + extra + [name + ".sgl"], group)
            checks.append((err_file, err + f"exit: {rc}\n"))
        for path, got in checks:
            ok = check_expectation(name, path, got, update) and ok
        if ok:
            passed += 1
        else:
            failed += 1
    return finish(group, passed, failed)


if __name__ == "__main__":
    sys.exit(main())
