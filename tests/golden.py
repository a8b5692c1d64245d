"""golden: the pieces every golden-test runner shares (tests/lang/run_golden.py,
tests/compiler/run_golden.py, tests/compiler/run_same.py): running sglc with a
clean environment, comparing output with an expectation file (or rewriting it
with --update), listing a group's cases, and the closing "N passed, N failed"
line.
"""
import difflib
import os
import subprocess
import sys


def run_sglc(sglc, args, cwd, timeout=60):
    """Runs sglc ARGS in cwd with NO_COLOR=1 and no $SGL_PATH.
    Returns (exit status, stdout, stderr) as text."""
    env = dict(os.environ, NO_COLOR="1")
    env.pop("SGL_PATH", None)
    p = subprocess.run([sglc] + args, cwd=cwd, env=env, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def case_names(group):
    """The case names (NAME for every NAME.sgl) of a group directory, sorted."""
    return sorted(f[:-4] for f in os.listdir(group) if f.endswith(".sgl"))


def check_expectation(name, path, got, update):
    """With update, writes got to path and returns True. Otherwise compares got
    with the file's text, printing a FAIL line and a unified diff when they
    differ or the file is missing; returns whether they matched."""
    if update:
        with open(path, "w") as fh:
            fh.write(got)
        return True
    ext = os.path.splitext(path)[1]
    if not os.path.exists(path):
        print(f"FAIL {name}: no {ext} expectation file (run with --update)")
        return False
    with open(path) as fh:
        want = fh.read()
    if got == want:
        return True
    print(f"FAIL {name} ({os.path.basename(path)}):")
    sys.stdout.writelines(difflib.unified_diff(
        want.splitlines(True), got.splitlines(True), "expected", "got"))
    return False


def finish(label, passed, failed):
    """Prints the closing line and returns the exit status."""
    print(f"{label}: {passed} passed, {failed} failed")
    return 1 if failed else 0
