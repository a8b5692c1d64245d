#!/usr/bin/env python3
# run_cases.py: golden tests of programs: each tests/vm/cases/NAME.sgl runs
# with `sglc run --fake` and its standard output, then "--- stderr", then its
# standard error, then "--- exit N", must equal NAME.out.
# usage: run_cases.py SGLC CASES_DIR [--update]
import os
import subprocess
import sys


def render(sglc, path):
    d = os.path.dirname(path)
    p = subprocess.run([sglc, 'run', '--fake', os.path.basename(path)], cwd=d, capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, NO_COLOR='1'))
    return '%s--- stderr\n%s--- exit %d\n' % (p.stdout, p.stderr, p.returncode)


def main():
    sglc, cases = os.path.abspath(sys.argv[1]), sys.argv[2]
    update = '--update' in sys.argv[3:]
    passed = failed = 0
    for name in sorted(os.listdir(cases)):
        if not name.endswith('.sgl'):
            continue
        path = os.path.join(cases, name)
        got = render(sglc, path)
        exp_path = path[:-4] + '.out'
        if update:
            with open(exp_path, 'w') as f:
                f.write(got)
            continue
        want = open(exp_path).read() if os.path.exists(exp_path) else None
        if got == want:
            passed += 1
        else:
            failed += 1
            print('FAIL %s\n--- got\n%s--- expected\n%s' % (name, got, want))
    print('vm cases: %d passed, %d failed' % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
