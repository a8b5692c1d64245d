#!/usr/bin/env python3
# batch_test.py: `sglc batch` over tests/vm/batch/: one JSON line per script
# in file order; a runtime error and a compile error are reported for their
# scripts while the others succeed; a failing run_batch instance inside a
# script leaves the other instances' results intact; a runaway loop hits the
# step limit without stalling the rest.
# usage: batch_test.py SGLC DIR (fake|model)
import json
import os
import subprocess
import sys
import tempfile


def main():
    sglc, d, mode = sys.argv[1:4]
    args = [sglc, 'batch', d, '--parallel', '3', '--max-steps', '1000000']
    if mode == 'fake':
        args.append('--fake')
    else:
        model = os.environ.get('SGL_TEST_MODEL', '')
        if not os.path.exists(model):
            if os.environ.get('CI') == 'true':
                print('FAIL: model missing')
                sys.exit(1)
            print('SKIP: model missing')
            sys.exit(77)
        args += ['--model', model, '--threads', '1']
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
    b = byname['b_runtime_error.sgl']
    assert b['status'] == 'error' and b['output'] == 'before\n', b
    assert 'b_runtime_error.sgl:5:11: error: division by zero' in b['error'], b
    c = byname['c_compile_error.sgl']
    assert c['status'] == 'compile_error' and "undefined name 'no_such_name'" in c['error'], c
    dd = byname['d_inner_batch.sgl']
    assert dd['status'] == 'ok', dd
    labels = dd['output'].split()
    assert len(labels) == 2 and all(l in ('good', 'poor') for l in labels), dd
    assert dd['requests'] == 2, dd  # the two scorings of the instances that ran
    e = byname['e_runaway.sgl']
    assert e['status'] == 'error' and 'step limit exceeded' in e['error'], e
    print('batch (%s): %d scripts checked' % (mode, len(lines)))


if __name__ == '__main__':
    main()
