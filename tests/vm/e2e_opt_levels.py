#!/usr/bin/env python3
# e2e_opt_levels.py: every examples/*.sgl prints the same text under -O0, -O1
# and -O2 on the real model (greedy decoding: run-level --temperature 0 for
# gens that leave it unset; the sampled ones carry their own seeds). The
# optimisation level changes the bytecode, prefix hints and request batching,
# never what the program prints. Prints each example's time and output size.
# usage: e2e_opt_levels.py SGLC EXAMPLES_DIR
# Skips (77) when $SGL_TEST_MODEL is missing, unless CI=true.
import os
import subprocess
import sys
import time


def fail(msg):
    print('FAIL: ' + msg)
    sys.exit(1)


def main():
    sglc, exdir = sys.argv[1], sys.argv[2]
    model = os.environ.get('SGL_TEST_MODEL', '')
    if not os.path.exists(model):
        if os.environ.get('CI') == 'true':
            fail('model missing: ' + model)
        print('SKIP: model missing: ' + model)
        sys.exit(77)
    examples = sorted(f for f in os.listdir(exdir) if f.endswith('.sgl'))
    if not examples:
        fail('no examples in ' + exdir)
    bad = []
    for ex in examples:
        outs = {}
        t0 = time.monotonic()
        for level in ('0', '1', '2'):
            p = subprocess.run([sglc, 'run', os.path.join(exdir, ex), '-O', level, '--model', model,
                                '--threads', '1', '--temperature', '0', '--max-tokens', '48'],
                               capture_output=True, text=True, timeout=120)
            if p.returncode != 0:
                fail('%s -O%s: exit %d\n%s' % (ex, level, p.returncode, p.stderr))
            if not p.stdout.strip():
                fail('%s -O%s printed nothing' % (ex, level))
            outs[level] = p.stdout
        same = outs['0'] == outs['1'] == outs['2']
        print('%-24s %s  %.1f s for three runs, %d lines' % (ex, 'same' if same else 'DIFFERENT',
                                                             time.monotonic() - t0, outs['0'].count('\n')))
        if not same:
            bad.append(ex)
            for level in ('0', '1', '2'):
                print('--- -O%s\n%s' % (level, outs[level]))
    if bad:
        fail('output depends on the optimisation level: ' + ', '.join(bad))
    print('opt levels: %d examples print the same text at -O0, -O1 and -O2' % len(examples))


if __name__ == '__main__':
    main()
