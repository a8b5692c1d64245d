#!/usr/bin/env python3
# repl_test.py: `sglc repl --fake` fed from a pipe: variables persist across
# entries (streams included), definitions are kept, lone expressions print
# their value, multi-line input continues while brackets are open, runtime
# errors are reported and the session goes on, and the : commands answer.
# usage: repl_test.py SGLC
import subprocess
import sys

INPUT = '''let x = 2
x * 21
fn greet(s, name) {
  s += "Hello " + name + gen("r", max_tokens=4)
}
let st = greet("Ada")
st["r"]
let x = x + 1
print(x)
[1,
 2]
1 / (x - 3)
x
:vars
:graph greet
:stats
:nonsense
'''

EXPECTED_OUT = '''42
"ok"
3
[1, 2]
3
x = 3
st = <stream 11 chars, vars ["r"]>
'''


def main():
    p = subprocess.run([sys.argv[1], 'repl', '--fake'], input=INPUT, capture_output=True, text=True,
                       timeout=60)
    out, err = p.stdout, p.stderr
    ok = True
    if p.returncode != 0:
        print('FAIL: exit %d' % p.returncode)
        ok = False
    if not out.startswith(EXPECTED_OUT):
        print('FAIL: stdout starts\n%s\nexpected\n%s' % (out[:400], EXPECTED_OUT))
        ok = False
    for want in ('fn greet(s, name)', 'gen %0 ("r", max_tokens=4)', 'engine fake: 1 requests done'):
        if want not in out:
            print('FAIL: stdout lacks %r' % want)
            ok = False
    for want in ('<repl>:1:1: error: division by zero\n    1 | 1 / (x - 3)\n      | ^', 'unknown command :nonsense'):
        if want not in err:
            print('FAIL: stderr lacks %r:\n%s' % (want, err))
            ok = False
    if not ok:
        sys.exit(1)
    print('repl: ok')


if __name__ == '__main__':
    main()
