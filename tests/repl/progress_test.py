#!/usr/bin/env python3
# progress_test.py: the status line of `sglc batch` and of run_batch in
# `sglc run`, on the tiny model: drawn on a pseudo-terminal (counts, tok/s,
# cache, erased at the end), absent when stderr is a pipe, and written as
# plain lines there with --progress. Also: `sglc run` streams what the
# program prints (a line reaches a pipe while the program still runs).
# usage: progress_test.py SGLC TINY_MODEL
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from term import CHILDREN, Term, fail  # noqa: E402

TIMEOUT = 120

SCRIPT = '''fn one(s, i) {
  s += "q" + str(i) + gen("a", max_tokens=30, ignore_eos=true)
}
main {
  let total = 0
  for i in range(%d) {
    let r = one(i)
    total += len(r["a"])
  }
  print(total > 0)
}
'''

BATCH_PROGRAM = '''fn one(s, i) {
  s += "q" + str(i) + gen("a", max_tokens=30, ignore_eos=true)
}
main {
  let args = []
  for i in range(8) {
    args = args + [{"i": i}]
  }
  let rs = run_batch(one, args, parallel=4)
  print("results", len(rs))
}
'''

STREAM_PROGRAM = '''fn one(s) {
  s += "q" + gen("a", max_tokens=30, ignore_eos=true)
}
main {
  print("first")
  while true {
    let r = one()
    let k = len(r["a"])
  }
}
'''

STATUS = re.compile(r'\[(\d+)/(\d+)\] (\d+) done, (\d+) failed, (\d+) running \| [0-9.]+ tok/s \| cache [0-9.]+%')


def check_tty(raw, total, step):
    text = raw.decode('utf-8', 'replace')
    lines = STATUS.findall(text)
    if not lines:
        fail('%s: no status line on the terminal:\n%r' % (step, text[-2000:]))
    for done_n, tot, ok_n, failed_n, running in lines:
        if int(tot) != total or int(ok_n) + int(failed_n) != int(done_n):
            fail('%s: inconsistent status %r' % (step, (done_n, tot, ok_n, failed_n, running)))
    # Drawn in place (\r ... erase to end of line) and erased at the end.
    if '\r\x1b[K' not in text:
        fail('%s: the status line was not erased:\n%r' % (step, text[-2000:]))


def main():
    sglc, model = sys.argv[1], sys.argv[2]
    base = [sglc]
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, 'scripts')
        os.mkdir(d)
        for k in range(6):
            with open(os.path.join(d, 's%d.sgl' % k), 'w') as f:
                f.write(SCRIPT % (3 + k))
        batch = base + ['batch', d, '--model', model, '--threads', '1', '--parallel', '3']

        # On a terminal: the line is drawn, counts add up, erased at the end.
        t = Term(batch)
        rc = t.finish('sglc batch on a terminal')
        if rc != 0:
            fail('sglc batch on a terminal: exit %d:\n%s' % (rc, t.screen[-2000:]))
        check_tty(t.raw, 6, 'sglc batch on a terminal')
        if 'sglc batch: 6 of 6 scripts ok' not in t.screen:
            fail('sglc batch on a terminal: no summary:\n%s' % t.screen[-2000:])

        # Piped: nothing but the summary on stderr.
        p = subprocess.run(batch, capture_output=True, text=True, errors='replace', timeout=TIMEOUT)
        if p.returncode != 0 or 'tok/s' in p.stderr or 'running' in p.stderr:
            fail('sglc batch piped: exit %d, stderr:\n%s' % (p.returncode, p.stderr))
        if sum(json.loads(l).get('status') == 'ok' for l in p.stdout.splitlines() if l.strip()) != 6:
            fail('sglc batch piped: stdout:\n%s' % p.stdout)
        # Piped with --progress: plain lines, the last with every script done.
        p = subprocess.run(batch + ['--progress'], capture_output=True, text=True, errors='replace', timeout=TIMEOUT)
        last = [l for l in p.stderr.splitlines() if l.startswith('progress: ')]
        if p.returncode != 0 or not last or not re.match(r'progress: \[6/6\] 6 done, 0 failed, 0 running', last[-1]):
            fail('sglc batch --progress piped: exit %d, stderr:\n%s' % (p.returncode, p.stderr))
        if '\x1b[' in p.stderr or '\r' in p.stderr:
            fail('sglc batch --progress piped: terminal codes in a pipe:\n%r' % p.stderr)

        # run_batch inside sglc run.
        prog = os.path.join(tmp, 'batch.sgl')
        with open(prog, 'w') as f:
            f.write(BATCH_PROGRAM)
        run = base + ['run', prog, '--model', model, '--threads', '1']
        t = Term(run)
        t.expect('results 8', 'sglc run with run_batch on a terminal')
        rc = t.finish('sglc run with run_batch on a terminal')
        if rc != 0:
            fail('sglc run on a terminal: exit %d:\n%s' % (rc, t.screen[-2000:]))
        check_tty(t.raw, 8, 'run_batch on a terminal')
        p = subprocess.run(run, capture_output=True, text=True, errors='replace', timeout=TIMEOUT)
        if p.returncode != 0 or p.stdout != 'results 8\n' or p.stderr:
            fail('sglc run piped: exit %d, stdout %r, stderr %r' % (p.returncode, p.stdout, p.stderr))
        p = subprocess.run(run + ['--progress'], capture_output=True, text=True, errors='replace', timeout=TIMEOUT)
        if p.returncode != 0 or not re.search(r'^progress: \[8/8\] 8 done, 0 failed, 0 running', p.stderr, re.M):
            fail('sglc run --progress piped: exit %d, stderr %r' % (p.returncode, p.stderr))

        # sglc run streams: "first" reaches the pipe while the program runs
        # on (it never ends; it is killed once the line came).
        prog = os.path.join(tmp, 'stream.sgl')
        with open(prog, 'w') as f:
            f.write(STREAM_PROGRAM)
        proc = subprocess.Popen(base + ['run', prog, '--model', model, '--threads', '1'], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        CHILDREN.append(proc.pid)
        got = b''
        deadline = time.monotonic() + TIMEOUT
        while b'\n' not in got and time.monotonic() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], 1.0)
            if r:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                got += chunk
        still_running = proc.poll() is None
        proc.kill()
        proc.wait()
        CHILDREN.remove(proc.pid)
        if got != b'first\n' or not still_running:
            fail('sglc run did not stream its output: got %r, still running %s' % (got, still_running))
    print('progress: ok')


if __name__ == '__main__':
    main()
