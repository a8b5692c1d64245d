#!/usr/bin/env python3
# batch_test.py: `sglc batch` over tests/vm/batch/: one JSON line per script
# in file order; a runtime error (with its traceback: file:line:col of every
# call) and a compile error are reported for their scripts while the others
# succeed with the results they get when run alone; a failing run_batch
# instance inside a script (under `sglc batch` and `sglc run`) leaves the
# other instances' results intact (equal to a batch without it) and reading
# it reports where it failed, with its calls; a runaway loop hits the step
# limit without stalling the rest.
# usage: batch_test.py SGLC DIR (fake|model)
import json
import os
import subprocess
import sys
import tempfile


def main():
    sglc, d, mode = sys.argv[1:4]
    args = [sglc, 'batch', d, '--parallel', '3', '--max-steps', '1000000']
    engine = []
    if mode == 'fake':
        engine = ['--fake']
    else:
        model = os.environ.get('SGL_TEST_MODEL', '')
        if not os.path.exists(model):
            if os.environ.get('CI') == 'true':
                print('FAIL: model missing')
                sys.exit(1)
            print('SKIP: model missing')
            sys.exit(77)
        engine = ['--model', model, '--threads', '1']
    args += engine
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'out.jsonl')
        p = subprocess.run(args + ['--out', out], capture_output=True, text=True, timeout=120)
        if p.returncode != 1:  # some scripts fail on purpose
            print('FAIL: exit %d: %s' % (p.returncode, p.stderr))
            sys.exit(1)
        lines = [json.loads(l) for l in open(out)]
    byname = {os.path.basename(r['file']): r for r in lines}
    assert [os.path.basename(r['file']) for r in lines] == sorted(byname), lines
    a = byname['a_ok.sgl']
    assert a['status'] == 'ok' and a['output'].startswith('answer:') and 'answer' in a['variables'], a
    assert a['requests'] == 1 and a['completion_tokens'] > 0, a
    alone = subprocess.run([sglc, 'run', os.path.join(d, 'a_ok.sgl'), '--json'] + engine, capture_output=True,
                           text=True, timeout=120)
    alone = json.loads(alone.stdout)
    assert alone['status'] == 'ok' and alone['variables'] == a['variables'], (alone, a)
    assert alone['output'] == a['output'], (alone, a)
    b = byname['b_runtime_error.sgl']
    assert b['status'] == 'error' and b['output'] == 'before\n', b
    bf = os.path.join(d, 'b_runtime_error.sgl')
    assert b['error'] == {'message': 'division by zero\n  in ratio at %s:3:12\n  in scaled at %s:6:12\n'
                          '  in main at %s:10:11' % (bf, bf, bf), 'file': bf, 'line': 3, 'col': 12,
                          'kind': 'runtime'}, b
    c = byname['c_compile_error.sgl']
    assert c['status'] == 'compile_error' and "undefined name 'no_such_name'" in c['error']['message'], c
    assert c['error']['kind'] == 'compile' and c['error']['line'] == 1, c
    # every row has the same keys, whatever its status
    assert all(sorted(r) == sorted(a) for r in lines), lines
    dd = byname['d_inner_batch.sgl']
    df = os.path.join(d, 'd_inner_batch.sgl')
    inner_err = ('%s:17:11: error: the instance failed at %s:5:5: assertion failed: bad input '
                 '(in check at %s:5:5, called from label at %s:9:13)' % (df, df, df, df))
    assert dd['status'] == 'error' and dd['error']['message'] == inner_err.split(': error: ', 1)[1], dd
    assert (dd['error']['file'], dd['error']['line'], dd['error']['col']) == (df, 17, 11), dd
    dlines = dd['output'].split('\n')
    labels = dlines[0].split()
    assert len(labels) == 2 and all(l in ('good', 'poor') for l in labels), dd
    assert dlines[1:] == ['true', ''], dd  # the same labels as a batch without the failing instance
    assert dd['requests'] == 4, dd  # the scorings of the four instances that ran
    # The same program under `sglc run`: output kept, the error shown with its source line.
    p = subprocess.run([sglc, 'run', df] + engine, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stdout == dd['output'], (p.returncode, p.stdout, p.stderr)
    assert p.stderr.startswith(inner_err + '\n   17 |     print(rs[1]["label"])\n      |           ^'), p.stderr
    e = byname['e_runaway.sgl']
    assert e['status'] == 'error' and 'step limit exceeded' in e['error']['message'], e
    print('batch (%s): %d scripts checked' % (mode, len(lines)))


if __name__ == '__main__':
    main()
