#!/usr/bin/env python3
# soak.py: many program instances through `sglc batch` (a bench, not a
# test): N scripts, 5% of them failing (a runtime error, or the memory
# limit hit by a program doubling a string), on the fake engine (or a
# model). Samples the batch process's resident memory while it runs and
# prints RSS at the warm start (WARM_FRAC of the run's time), at quarters,
# at the peak and at the end (the last sample), with the end / warm ratio,
# and checks every row's status. `sglc batch` writes its rows in file order
# when all scripts are done, so progress is measured by time.
#
#   bench/soak.py [--sglc build/sglc] [--n 10000] [--parallel 64] [--model PATH]
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench_server import rss_kb as rss_kib

WARM_FRAC = 0.10

OK = '''fn work(s, i) {
    s += f"item {i}: " + gen("a", max_tokens=4)
}
main {
    let rs = run_batch(work, [{"i": %d}, {"i": %d}])
    let acc = []
    for k in range(200) {
        acc = acc + [{"k": k, "v": [k, str(k)]}]
    }
    print(len(acc), text(rs[0]))
}
'''
FAIL_ERROR = '''main {
    let m = {"a": 1}
    print(m["missing %d"])
}
'''
FAIL_MEMORY = '''main {
    let s = "x%d"
    for i in range(40) {
        s = s + s
    }
    print(len(s))
}
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--sglc', default=os.path.join(os.path.dirname(__file__), '..', 'build', 'sglc'))
    ap.add_argument('--n', type=int, default=10000)
    ap.add_argument('--parallel', type=int, default=64)
    ap.add_argument('--model')
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix='sgl-soak-')
    try:
        d = os.path.join(tmp, 'progs')
        os.makedirs(d)
        n_fail = 0
        for i in range(a.n):
            if i % 20 == 7:
                src = (FAIL_ERROR if (i // 20) % 2 else FAIL_MEMORY) % i
                n_fail += 1
            else:
                src = OK % (i, i + 1)
            with open(os.path.join(d, 'p%06d.sgl' % i), 'w') as f:
                f.write(src)
        out = os.path.join(tmp, 'rows.jsonl')
        cmd = [a.sglc, 'batch', d, '--out', out, '--parallel', str(a.parallel), '--max-mem-mb', '16']
        cmd += ['--model', a.model] if a.model else ['--fake']
        t0 = time.time()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        samples = []  # (seconds, rss KiB)
        while p.poll() is None:
            r = rss_kib(p.pid)
            if r:
                samples.append((time.time() - t0, r))
            time.sleep(0.05)
        err = p.stderr.read().decode(errors='replace')
        secs = time.time() - t0
        rows = [json.loads(l) for l in open(out)] if os.path.exists(out) else []
        bad = [r for r in rows if r.get('status') != 'ok']
        print('soak: %d scripts (%d meant to fail), parallel %d, %s: %.1f s, exit %d' %
              (a.n, n_fail, a.parallel, 'model' if a.model else 'fake engine', secs, p.returncode))
        print('rows: %d written, %d ok, %d failed' % (len(rows), len(rows) - len(bad), len(bad)))
        mem_rows = sum(1 for r in bad if 'memory limit of 16 MiB reached' in (r.get('error') or ''))
        print('failed rows with the memory-limit message: %d' % mem_rows)
        if not samples:
            print('no RSS samples (run too short)')
            return 1
        span = samples[-1][0]
        at = lambda frac: next((x for x in samples if x[0] >= frac * span), samples[-1])
        warm, end = at(WARM_FRAC), samples[-1]
        peak = max(samples, key=lambda x: x[1])
        print('RSS: warm start %.1f MiB (%.1f s), peak %.1f MiB (%.1f s), end %.1f MiB (%.1f s): '
              'end / warm = %.2f; %d samples' % (warm[1] / 1024, warm[0], peak[1] / 1024, peak[0],
                                                  end[1] / 1024, end[0], end[1] / warm[1], len(samples)))
        print('  RSS at 25%% / 50%% / 75%% of the run: %s MiB' %
              ' / '.join('%.1f' % (at(f)[1] / 1024) for f in (0.25, 0.5, 0.75)))
        ok = len(rows) == a.n and len(bad) == n_fail
        if not ok:
            print('unexpected: %s' % err[-2000:])
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp)


if __name__ == '__main__':
    sys.exit(main())
