#!/usr/bin/env python3
# remote_bench.py: `sglc bench --backend sglang:URL` against an `sglc serve`
# this test starts on the tiny model: skeleton_of_thought (a fork workload;
# tests/bench/tiny's short stand-in, as the server keeps the tiny model's
# 256-token context) in full, baseline and no-cache
# mode. The table has a row for full and baseline, no-cache (a local engine
# setting) is reported as skipped without failing the run, the server's
# cache was flushed before each run, and the JSON carries the backend and
# sane hit rates (full reuses the server's cache, within the best possible).
# usage: remote_bench.py SGLC TINY_MODEL
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'server'))
from srvutil import Server  # noqa: E402


def fail(msg):
    print('FAIL: ' + msg)
    sys.exit(1)


def flushes(url):
    text = urllib.request.urlopen(url + '/metrics', timeout=30).read().decode()
    n = 0
    for line in text.splitlines():
        if line.startswith('sglc_requests_total{route="/flush_cache",status="200"}'):
            n += int(float(line.split()[-1]))
    return n


def main():
    sglc, model = sys.argv[1], sys.argv[2]
    with Server(sglc, model, threads=1) as srv, tempfile.TemporaryDirectory() as tmp:
        jpath = os.path.join(tmp, 'b.json')
        spec = 'sglang:' + srv.url
        p = subprocess.run([sglc, 'bench', 'skeleton_of_thought', '--quick', '--backend', spec, '--model', model,
                            '--modes', 'full,baseline,no-cache', '--json', jpath,
                            '--workloads', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tiny')],
                           capture_output=True, text=True, timeout=120)
        print(p.stdout)
        if p.returncode != 0:
            fail('exit %d\n%s' % (p.returncode, p.stderr))
        if 'backend ' + spec not in p.stdout.splitlines()[0]:
            fail('the header does not name the backend: ' + p.stdout.splitlines()[0])
        rows = {tuple(l.split()[:2]): l for l in p.stdout.splitlines() if l.startswith('skeleton_of_thought')}
        for m in ('full', 'baseline'):
            row = rows.get(('skeleton_of_thought', m), '')
            if len(row.split()) != 12:  # name, mode, progs, runs, progs/s, spread, tok/s, p50, p99, hit, best, ratio
                fail('no table row for %s: %r' % (m, row))
        if 'skipped' not in rows.get(('skeleton_of_thought', 'no-cache'), ''):
            fail('no-cache is not reported as skipped')
        if 'speedup of full' not in p.stdout:
            fail('no speedup section')
        got = flushes(srv.url)
        if got != 2:
            fail('%d cache flushes on the server, expected 2 (one per run)' % got)
        doc = json.load(open(jpath))
        if doc.get('backend') != spec:
            fail('JSON backend %r' % doc.get('backend'))
        runs = {r['mode']: r for r in doc['results']}
        if not runs['no-cache']['skipped'] or runs['no-cache']['ok']:
            fail('no-cache result %r' % runs['no-cache'])
        for m in ('full', 'baseline'):
            r = runs[m]
            if not r['ok'] or r['programs'] < 1 or r['requests']['generate'] != 6 * r['programs']:
                fail('bad %s result %r' % (m, r))
            if not 0 <= r['hit_rate'] <= r['best_hit_rate'] + 1e-9 <= 1 + 1e-9:
                fail('hit rate outside [0, best]: %r' % r)
        if runs['full']['cached_tokens'] <= 0 or runs['full']['requests']['prefill'] < 1:
            fail('full did not reuse the server cache or send its fork hint: %r' % runs['full'])
        if runs['baseline']['requests']['prefill'] != 0:
            fail('baseline sent prefills: %r' % runs['baseline'])
        rc, _ = srv.stop()
        if rc != 0:
            fail('server exit %d' % rc)
    print('ok: full %.3f programs/s, hit %.3f of best %.3f' %
          (runs['full']['programs_per_s'], runs['full']['hit_rate'], runs['full']['best_hit_rate']))


main()
