#!/usr/bin/env python3
# repl_pty_test.py: `sglc repl --fake` driven through a real pseudo-terminal,
# typed the way a person would: a multi-line fn definition (continuation
# prompt), a variable kept between entries, a line fixed with the arrow keys
# and a typed character, the up arrow recalling and re-running an earlier
# entry, :help, :graph FN, :stats and :quit. Every step waits (with a
# timeout) for its answer on the screen before the next is typed.
# usage: repl_pty_test.py SGLC
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'repl'))
from term import Term, fail  # noqa: E402

UP, LEFT = '\x1b[A', '\x1b[D'


def main():
    sglc = sys.argv[1]
    helptext = subprocess.run([sglc, 'repl', '--help'], capture_output=True, text=True, timeout=30).stdout
    if 'Line editing and history' not in helptext:
        print('SKIP: sglc was built without libedit (no line editing to test)')
        sys.exit(77)
    t = Term([sglc, 'repl', '--fake'], env=dict(os.environ, COLUMNS='200', LINES='50'))
    t.expect('sgl> ', 'banner')

    # A definition over three lines: the second and third get the continuation prompt.
    t.type('fn ask(s, q) {\r')
    t.expect('...> ', 'continuation prompt 1')
    t.type('  s += q + gen("a", max_tokens=3)\r')
    t.expect('...> ', 'continuation prompt 2')
    t.type('}\r')
    t.expect('sgl> ', 'definition kept')

    t.type('let n = 20\r')
    t.expect('sgl> ', 'let')
    t.type('n += 1; print("n is", n)\r')
    t.expect('n is 21', 'variable kept between entries')
    t.expect('sgl> ', 'prompt after print')

    # Line editing: type "prnt(n * 2)", go back with the left arrow and insert the "i".
    t.type('prnt(n * 2)' + LEFT * 9 + 'i\r')
    t.expect(re.compile(r'\n42\n'), 'line fixed with the arrow keys')
    t.expect('sgl> ', 'prompt after edit')

    # Up arrow twice: the previous entry is print(n * 2), before it the += line.
    t.type(UP + UP + '\r')
    t.expect('n is 22', 'history recall re-runs the += entry')
    t.expect('sgl> ', 'prompt after recall')

    t.type('let st = ask("Q:")\r')
    t.expect('sgl> ', 'calling the kept definition')
    t.type('st["a"]\r')
    t.expect('"ok"', 'the fake engine reply')
    t.expect('sgl> ', 'prompt after reply')

    t.type(':help\r')
    shown = t.expect('sgl> ', ':help')
    for want in (':graph FN', ':stats', ':quit'):
        if want not in shown:
            fail(':help lacks %r:\n%s' % (want, shown))

    t.type(':graph ask\r')
    shown = t.expect('sgl> ', ':graph')
    if 'fn ask(s, q)' not in shown or 'gen %' not in shown:
        fail(':graph ask shows:\n%s' % shown)

    t.type(':stats\r')
    shown = t.expect('sgl> ', ':stats')
    if not re.search(r'engine fake: 1 requests done', shown) or 'vm: 1 generate' not in shown:
        fail(':stats shows:\n%s' % shown)

    t.type(':quit\r')
    rc = t.finish(':quit')
    if rc != 0:
        fail('exit status %d; screen:\n%s' % (rc, t.screen[-2000:]))
    print('repl (pty): ok')


if __name__ == '__main__':
    main()
