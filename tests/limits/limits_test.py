#!/usr/bin/env python3
# limits_test.py: hostile programs on the fake engine: resource limits and
# the import boundary (docs/language.md "Limits" and "Imports").
#   - a program doubling a string stops with "memory limit of N MiB
#     reached" and a traceback; its run_batch siblings finish;
#   - imports of /dev/zero (symlink), a FIFO and a directory are refused by
#     name without reading; a symlink to a file outside the program's
#     directory is refused and its content never printed (sglc check, run,
#     batch rows), unless --allow-io, and then at most one line is quoted;
#   - source size limits per file and per program, and their options;
#   - fork width and run_batch size limits.
# usage: limits_test.py SGLC
import json
import os
import subprocess
import sys
import tempfile

fails = []


def expect(cond, what, detail=''):
    if not cond:
        fails.append(what + (': ' + detail[-2000:] if detail else ''))


def sglc(*args, cwd=None, timeout=60):
    p = subprocess.run([SGLC] + list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd,
                       env=dict(os.environ, NO_COLOR='1', SGL_PATH=''))
    return p.returncode, p.stdout, p.stderr


def write(path, text):
    with open(path, 'w') as f:
        f.write(text)


DOUBLE = '''fn grow(st, n) {
    let s = "ab"
    for i in range(n) {
        s = s + s
    }
    st += f"len {len(s)}"
}
main {
    let rs = run_batch(grow, [{"n": 3}, {"n": 60}, {"n": 5}])
    print(text(rs[0]), text(rs[2]))
    print(rs[1]["x"])
}
'''

DOUBLE_MAIN = '''fn grow(n) {
    let s = "ab"
    for i in range(n) {
        s = s + s
    }
    return s
}
main {
    print(len(grow(60)))
}
'''


def test_memory(tmp):
    path = os.path.join(tmp, 'double.sgl')
    write(path, DOUBLE)
    rc, out, err = sglc('run', '--fake', '--max-mem-mb', '4', path)
    lines = out.splitlines()
    expect(rc == 1, 'memory: exit 1', err)
    expect(lines[:1] == ['len 16 len 64'], 'memory: siblings finish', out + err)
    expect('memory limit of 4 MiB reached' in err, 'memory: message', err)
    write(path, DOUBLE_MAIN)
    rc, out, err = sglc('run', '--fake', '--max-mem-mb', '4', path)
    expect(rc == 1 and 'memory limit of 4 MiB reached' in err, 'memory: main fails', err)
    expect('in grow at' in err and 'in main at' in err and 's = s + s' in err, 'memory: traceback with the line', err)
    # The whole-run limit applies too, and 0 lifts the per-instance one.
    rc, out, err = sglc('run', '--fake', '--max-mem-mb', '0', '--max-run-mem-mb', '3', path)
    expect(rc == 1 and 'memory limit of 3 MiB reached' in err, 'memory: run limit', err)
    # In place (+=) and list growth are counted as well.
    write(path, 'main {\n  let s = "ab"\n  let l = [1]\n  for i in range(60) {\n    s += s\n    l = l + l\n  }\n}\n')
    rc, out, err = sglc('run', '--fake', '--max-mem-mb', '2', path)
    expect(rc == 1 and 'memory limit of 2 MiB reached' in err, 'memory: += and lists', err)


def test_imports(tmp):
    prog = os.path.join(tmp, 'prog')
    os.makedirs(prog)
    os.symlink('/dev/zero', os.path.join(prog, 'zero.sgl'))
    os.mkfifo(os.path.join(prog, 'fifo.sgl'))
    os.makedirs(os.path.join(prog, 'dir.sgl'))
    secret = os.path.join(tmp, 'secret.txt')
    write(secret, ''.join('line%d: top-secret-%d:x:0:0\n' % (i, i) for i in range(30)))
    os.symlink(secret, os.path.join(prog, 'outside.sgl'))
    os.makedirs(os.path.join(prog, 'lib'))
    write(os.path.join(prog, 'lib', 'ok.sgl'), 'fn twice(x) { return x * 2 }\n')
    cases = {'zero': 'resolves to \'/dev/zero\', outside', 'fifo': 'is a FIFO', 'dir': 'is a directory',
             'outside': 'outside the program\'s directory'}
    for name, why in cases.items():
        path = os.path.join(prog, 'main_%s.sgl' % name)
        write(path, 'import "%s"\nmain { print(1) }\n' % name)
        rc, out, err = sglc('check', path, timeout=20)
        expect(rc == 1 and why in err, 'import %s refused' % name, err)
        expect('top-secret' not in out + err, 'import %s: nothing of the file quoted' % name, err)
    # --allow-io lifts the boundary but not the regular-file rule; a file
    # that is not SGL then shows at most its first offending line.
    rc, out, err = sglc('check', '--allow-io', os.path.join(prog, 'main_zero.sgl'), timeout=20)
    expect(rc == 1 and 'is a character device' in err, 'allow-io: /dev/zero still refused', err)
    rc, out, err = sglc('check', '--allow-io', os.path.join(prog, 'main_outside.sgl'))
    quoted = [l for l in err.splitlines() if 'top-secret' in l]
    expect(rc == 1 and 0 < len(quoted) <= 2 and 'more errors in this imported file not shown' in err,
           'allow-io: one line quoted', err)
    # Inside the directory (and via -I) imports work.
    path = os.path.join(prog, 'main_ok.sgl')
    write(path, 'import "lib/ok"\nmain { print(twice(21)) }\n')
    rc, out, err = sglc('run', '--fake', path)
    expect(rc == 0 and out == '42\n', 'import inside the directory', out + err)
    other = os.path.join(tmp, 'other')
    os.makedirs(other)
    write(os.path.join(other, 'main.sgl'), 'import "ok"\nmain { print(twice(2)) }\n')
    rc, out, err = sglc('run', '--fake', os.path.join(other, 'main.sgl'))
    expect(rc == 1 and 'cannot find module' in err, 'import elsewhere not found', err)
    rc, out, err = sglc('run', '--fake', '-I', os.path.join(prog, 'lib'), os.path.join(other, 'main.sgl'))
    expect(rc == 0 and out == '4\n', 'import through -I', out + err)
    # sglc batch rows carry no line of the outside file.
    bdir = os.path.join(tmp, 'batch')
    os.makedirs(bdir)
    os.symlink(secret, os.path.join(bdir, 'leak.sgl.txt'))
    write(os.path.join(bdir, 'a.sgl'), 'import "leak.sgl.txt"\nmain { print(1) }\n')
    write(os.path.join(bdir, 'b.sgl'), 'main { print(2) }\n')
    rc, out, err = sglc('batch', '--fake', bdir)
    rows = [json.loads(l) for l in out.splitlines() if l.strip()]
    expect(rc == 1 and len(rows) == 2, 'batch: two rows', out + err)
    expect('top-secret' not in out + err, 'batch: no line of the outside file', out)
    expect(any(r.get('status') == 'ok' for r in rows), 'batch: the clean program runs', out)


def test_sizes(tmp):
    d = os.path.join(tmp, 'sizes')
    os.makedirs(d)
    big = os.path.join(d, 'big.sgl')
    write(big, '# ' + 'x' * (5 << 20) + '\nmain { print(1) }\n')
    rc, out, err = sglc('check', big)
    expect(rc == 1 and 'too large' in err and '4 MiB' in err, 'size: file limit', err)
    rc, out, err = sglc('check', '--max-file-mb', '8', big)
    expect(rc == 0, 'size: --max-file-mb lifts it', err)
    p = subprocess.run([SGLC, 'run', '--fake', '-'], input=b'\0' * (6 << 20), capture_output=True, timeout=60)
    expect(p.returncode == 1 and b'input too large' in p.stderr, 'size: stdin limit', p.stderr.decode())
    for i in range(3):
        write(os.path.join(d, 'part%d.sgl' % i), '# ' + 'y' * (3 << 20) + '\nfn f%d() { return %d }\n' % (i, i))
    main = os.path.join(d, 'main.sgl')
    write(main, 'import "part0"\nimport "part1"\nimport "part2"\nmain { print(f0() + f1() + f2()) }\n')
    rc, out, err = sglc('check', '--max-source-mb', '8', main)
    expect(rc == 1 and 'exceed 8 MiB in total' in err, 'size: total limit', err)
    rc, out, err = sglc('run', '--fake', main)
    expect(rc == 0 and out == '3\n', 'size: default total fits', out + err)


def test_widths(tmp):
    path = os.path.join(tmp, 'fork.sgl')
    write(path, 'fn w(s, n) { s += "x" }\nfn forks(s, n) {\n  let fs = fork(s, n)\n  s += f"{len(fs)}"\n}\n'
          'main {\n  print(text(run_batch(forks, [{"n": 300}])[0]))\n'
          '  print(len(run_batch(w, [{"n": 1}, {"n": 2}, {"n": 3}])))\n}\n')
    rc, out, err = sglc('run', '--fake', path)
    expect(rc == 0 and out == '300\n3\n', 'widths: defaults', out + err)
    rc, out, err = sglc('run', '--fake', '--max-fork', '100', path)
    expect(rc == 1 and 'fork width limit' in err, 'widths: fork limit', err)
    rc, out, err = sglc('run', '--fake', '--max-batch', '2', path)
    expect(rc == 1 and 'exceed the limit of 2' in err, 'widths: run_batch limit', err)


def main():
    global SGLC
    SGLC = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        for t in (test_memory, test_imports, test_sizes, test_widths):
            sub = os.path.join(tmp, t.__name__)
            os.makedirs(sub)
            t(sub)
    for f in fails:
        print('FAIL', f)
    print('limits: %d failed' % len(fails))
    sys.exit(1 if fails else 0)


if __name__ == '__main__':
    main()
