#!/usr/bin/env python3
# e2e_bench.py: `sglc bench --quick` on the default model, on three of the
# workloads and in the full and baseline modes only (the ablations run the
# same code path and would quadruple the time): the table is printed with a row per workload and mode and the
# speedup section, the JSON holds every run with sane figures, the SVG is
# well-formed with one bar per run.
# usage: e2e_bench.py SGLC
# Skips (77) when $SGL_TEST_MODEL is missing, unless CI=true.
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET


def fail(msg):
    print('FAIL: ' + msg)
    sys.exit(1)


def main():
    sglc = sys.argv[1]
    model = os.environ.get('SGL_TEST_MODEL', '')
    if not os.path.exists(model):
        if os.environ.get('CI') == 'true':
            fail('model missing: ' + model)
        print('SKIP: model missing: ' + model)
        sys.exit(77)
    listing = subprocess.run([sglc, 'bench', '--list'], capture_output=True, text=True, timeout=30)
    if listing.returncode != 0:
        fail('--list: exit %d' % listing.returncode)
    section = listing.stdout.split('modes:')[0]
    known = [l.split()[0] for l in section.splitlines() if l.startswith('  ')]
    if len(known) < 8 or 'modes:' not in listing.stdout:
        fail('--list shows %d workloads:\n%s' % (len(known), listing.stdout))
    # Three workloads (no fork, fork, multi-turn) keep the test short; the
    # unit suite runs every workload on the tiny model.
    workloads = ['agents', 'skeleton_of_thought', 'chat_short']
    if any(w not in known for w in workloads):
        fail('--list lacks one of %s' % workloads)
    with tempfile.TemporaryDirectory() as tmp:
        jpath, spath = os.path.join(tmp, 'b.json'), os.path.join(tmp, 'b.svg')
        p = subprocess.run([sglc, 'bench'] + workloads + ['--quick', '--modes', 'full,baseline', '--model', model,
                            '--threads', '2', '--json', jpath, '--plot', spath],
                           capture_output=True, text=True, timeout=580)
        print(p.stdout)
        if p.returncode != 0:
            fail('exit %d\n%s' % (p.returncode, p.stderr))
        for w in workloads:
            for m in ('full', 'baseline'):
                if not any(l.split()[:2] == [w, m] for l in p.stdout.splitlines()):
                    fail('no table row for %s %s' % (w, m))
        if 'speedup of full' not in p.stdout or 'geomean' not in p.stdout:
            fail('no speedup section')
        doc = json.load(open(jpath))
        runs = doc['results']
        if len(runs) != 2 * len(workloads):
            fail('%d results in the JSON' % len(runs))
        for r in runs:
            if not r['ok'] or r['programs'] < 1 or r['programs_per_s'] <= 0:
                fail('bad result %r' % r)
            if not 0 <= r['hit_rate'] <= r['best_hit_rate'] + 1e-9 <= 1 + 1e-9:
                fail('hit rate outside [0, best]: %r' % r)
            if r['mode'] == 'baseline' and (r['cached_tokens'] != 0 or r['requests']['prefill'] != 0):
                fail('baseline used the cache or prefills: %r' % r)
        for w in workloads:
            if doc['speedup_of_full'][w]['baseline'] <= 0:
                fail('no speedup for ' + w)
        root = ET.parse(spath).getroot()
        if not root.tag.endswith('svg'):
            fail('SVG root is ' + root.tag)
        bars = [e for e in root.iter() if e.tag.endswith('rect') and e.find('{*}title') is not None]
        if len(bars) != len(runs):
            fail('%d bars for %d runs' % (len(bars), len(runs)))
    print('ok: %d workloads, geomean speedup over baseline %.2fx'
          % (len(workloads), doc['geomean_speedup_of_full']['baseline']))


main()
