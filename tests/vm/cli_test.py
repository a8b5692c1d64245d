#!/usr/bin/env python3
# cli_test.py: `sglc run` on the fake engine: main, --fn with JSON and string
# arguments, a fresh-stream function, --json shape, a runtime error (exit 1,
# located message with the source line), an unknown function (exit 2), the
# same output at -O0 and -O2, a stdlib import, and the --allow-io builtins
# (refused without the flag).
# usage: cli_test.py SGLC
import json
import os
import subprocess
import sys
import tempfile

SRC = '''import "strings"
fn add(a, b) { return a + b }
fn greet(s, name) { s += f"Hi {name}." + gen("reply", max_tokens=5) }
fn boom(x) {
  let d = x - x
  return x / d
}
main { print("main ran", upper_first("abc")) }
fn upper_first(t) { return substr(t, 0, 1) + "!" }
'''


def run(sglc, *args):
    return subprocess.run([sglc, 'run', '--fake'] + list(args), capture_output=True, text=True, timeout=60)


def main():
    sglc = sys.argv[1]
    fails = []

    def expect(cond, what):
        if not cond:
            fails.append(what)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'c.sgl')
        with open(path, 'w') as f:
            f.write(SRC)
        p = run(sglc, path)
        expect(p.returncode == 0 and p.stdout == 'main ran a!\n', 'main: %r %r' % (p.stdout, p.stderr))
        q = run(sglc, path, '--no-cache')
        expect(q.returncode == 0 and q.stdout == p.stdout, '--no-cache: %r %r' % (q.stdout, q.stderr))
        for level in ('-O0', '-O2'):
            q = run(sglc, path, level)
            expect(q.stdout == p.stdout, '%s output differs: %r' % (level, q.stdout))
        p = run(sglc, path, '--fn', 'add', '2', '40')
        expect(p.stdout == '42\n', 'add ints: %r' % p.stdout)
        p = run(sglc, path, '--fn', 'add', 'x', 'y')
        expect(p.stdout == 'xy\n', 'add strings: %r' % p.stdout)
        p = run(sglc, path, '--fn', 'greet', 'Ada', '--json')
        r = json.loads(p.stdout)
        expect(r['status'] == 'ok' and r['variables'] == {'reply': 'ok'} and r['requests'] == 1,
               'greet json: %r' % r)
        p = run(sglc, path, '--fn', 'greet', 'Ada', '--trace')
        expect('[req 1] generate gen \'reply\' at ' + path + ':3:' in p.stderr
               and '[req 1] done stop: prompt 7, cached 0, completion 2 tokens, text "ok"' in p.stderr,
               'trace: %r' % p.stderr)
        p = run(sglc, path, '--fn', 'boom', '3')
        expect(p.returncode == 1, 'boom exit %d' % p.returncode)
        expect(p.stderr.startswith(path + ':6:10: error: division by zero\n    6 |   return x / d\n'
                                   '      |          ^'), 'boom stderr: %r' % p.stderr)
        p = run(sglc, path, '--fn', 'boom', '3', '--json')
        r = json.loads(p.stdout)
        expect(r['status'] == 'error' and 'division by zero' in r['error']['message'], 'boom json: %r' % r)
        p = run(sglc, path, '--fn', 'nope')
        expect(p.returncode == 2 and "no function 'nope'" in p.stderr, 'nope: %r' % p.stderr)
        io = os.path.join(tmp, 'io.sgl')
        target = os.path.join(tmp, 'out.txt')
        with open(io, 'w') as f:
            f.write('main {\n  write_file("%s", "hello io")\n  print(read_file("%s"))\n'
                    '  print(shell("echo out; echo err 1>&2; exit 3"))\n}\n' % (target, target))
        p = run(sglc, io)
        expect(p.returncode == 1 and 'write_file() needs --allow-io' in p.stderr, 'io without flag: %r' % p.stderr)
        p = run(sglc, io, '--allow-io')
        expect(p.stdout == 'hello io\n{"status": 3, "stdout": "out\\n", "stderr": "err\\n"}\n',
               'io: %r %r' % (p.stdout, p.stderr))
        p = subprocess.run([sglc, 'run', '--fake', '-'], input='main { print("stdin", 6 * 7) }\n',
                           capture_output=True, text=True, timeout=60)
        expect(p.stdout == 'stdin 42\n', 'stdin program: %r %r' % (p.stdout, p.stderr))
        p = run(sglc, path, '--fn', 'add', '1')
        expect(p.returncode == 2 and 'takes 2 arguments' in p.stderr, 'arity: %r' % p.stderr)
    if fails:
        for f in fails:
            print('FAIL: ' + f)
        sys.exit(1)
    print('cli: ok')


if __name__ == '__main__':
    main()
