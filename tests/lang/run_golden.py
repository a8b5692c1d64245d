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
import difflib
import os
import subprocess
import sys


def run(sglc, args, cwd):
    env = dict(os.environ, NO_COLOR="1")
    env.pop("SGL_PATH", None)
    p = subprocess.run([sglc] + args, cwd=cwd, env=env, capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    sglc = os.path.abspath(sys.argv[1])
    group = sys.argv[2]
    update = "--update" in sys.argv[3:]
    is_ast_group = os.path.basename(os.path.normpath(group)) == "ast"
    passed = failed = 0
    names = sorted(f[:-4] for f in os.listdir(group) if f.endswith(".sgl"))
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
            rc, out, _ = run(sglc, ["dump", "--ast"] + extra + [name + ".sgl"], group)
            checks.append((ast_file, out))
        if want_err:
            rc, _, err = run(sglc, ["check"] + extra + [name + ".sgl"], group)
            checks.append((err_file, err + f"exit: {rc}\n"))
        for path, got in checks:
            if update:
                with open(path, "w") as f:
                    f.write(got)
                continue
            with open(path) as f:
                want = f.read()
            if got != want:
                ok = False
                print(f"FAIL {name} ({os.path.basename(path)}):")
                sys.stdout.writelines(difflib.unified_diff(
                    want.splitlines(True), got.splitlines(True), "expected", "got"))
        if ok:
            passed += 1
        else:
            failed += 1
    print(f"{group}: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
