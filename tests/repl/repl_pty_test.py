#!/usr/bin/env python3
# repl_pty_test.py: `sglc repl` on the tiny model, typed on a pseudo-terminal:
# Ctrl-C during a running entry of gens returns to the prompt with earlier
# variables intact and no engine request left running; Ctrl-C drops a line
# being typed and an unfinished entry; two empty lines or a : command drop
# one too; fn redefinition (with its note); :reset; :save and :load; Tab
# completion of a variable and of a : command; located errors in the entry's
# own words and lines; the history file under $XDG_STATE_HOME; Ctrl-D leaves
# with status 0, also when typed while an entry runs.
# usage: repl_pty_test.py SGLC TINY_MODEL
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from term import Term, fail  # noqa: E402

CTRL_C, CTRL_D, TAB = '\x03', '\x04', '\t'


def main():
    sglc, model = sys.argv[1], sys.argv[2]
    helptext = subprocess.run([sglc, 'repl', '--help'], capture_output=True, text=True, timeout=60).stdout
    if 'Line editing and history' not in helptext:
        print('SKIP: sglc was built without libedit (no line editing to test)')
        sys.exit(77)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, XDG_STATE_HOME=os.path.join(tmp, 'state'))
        t = Term([sglc, 'repl', '--model', model, '--threads', '1'], env)
        t.expect('sgl> ', 'banner')

        t.type('let x = 41\r')
        t.expect('sgl> ', 'let x')
        t.type('fn long(s) {\r')
        t.expect('...> ', 'continuation prompt')
        t.type('  s += "a" + gen("x", max_tokens=200, ignore_eos=true)\r')
        t.expect('...> ', 'continuation prompt 2')
        t.type('}\r')
        t.expect('sgl> ', 'fn long defined')
        t.type('let n = 0\r')
        t.expect('sgl> ', 'let n')

        # An entry that runs gens until it is interrupted; each finished gen
        # prints a tick, so Ctrl-C comes while gens run.
        t.type('while true { let u = long(); let k = len(u["x"]); n += 1; print("tick", n) }\r')
        t.expect('tick 2', 'gens running')
        t.type(CTRL_C)
        shown = t.expect('sgl> ', 'Ctrl-C returns to the prompt')
        if not re.search(r'<repl(:long)?>:\d+:\d+: error: interrupted', shown) or '<repl>:1:' not in shown:
            fail('Ctrl-C: no located "interrupted" error:\n%s' % shown[-3000:])
        t.type('x + n\r')
        t.expect(re.compile(r'\n41\n'), 'earlier variables kept (the interrupted entry changed nothing)')
        t.expect('sgl> ', 'prompt after x + n')
        t.type(':stats\r')
        shown = t.expect('sgl> ', ':stats')
        if '0 running, 0 waiting' not in shown:
            fail('requests still running after Ctrl-C:\n%s' % shown)
        t.type('let v = long()\r')
        t.expect('sgl> ', 'a gen after the interrupt')
        t.type('len(v["x"]) > 0\r')
        t.expect('true', 'the gen after the interrupt produced text')
        t.expect('sgl> ', 'prompt after len')

        # Ctrl-C drops the line being typed, and an unfinished entry.
        t.type('x = 0' + CTRL_C)
        t.expect('sgl> ', 'Ctrl-C on a typed line')
        t.type('fn bad( {\r')
        t.expect('...> ', 'unbalanced entry')
        t.type(CTRL_C)
        t.expect('sgl> ', 'Ctrl-C drops the unbalanced entry')
        t.type('[1,\r')
        t.expect('...> ', 'unfinished list')
        t.type('\r')
        t.expect('...> ', 'one empty line continues')
        t.type('\r')
        t.expect('(unfinished entry dropped)', 'two empty lines drop the entry')
        t.expect('sgl> ', 'prompt after dropping')
        # A : command at the continuation prompt leaves the unfinished entry.
        t.type('fn bad2( {\r')
        t.expect('...> ', 'unbalanced entry 2')
        t.type(':vars\r')
        shown = t.expect('sgl> ', ':vars at the continuation prompt')
        if '(unfinished entry dropped)' not in shown or 'x = 41' not in shown:
            fail(':vars at the continuation prompt shows:\n%s' % shown)

        # Errors name the entry and its own lines, never the generated code.
        t.type('let y = 1\r')
        t.expect('sgl> ', 'let y')
        t.type('if y > 0 {\r')
        t.expect('...> ', 'if block')
        t.type('  y = y / 0\r')
        t.expect('...> ', 'if body')
        t.type('}\r')
        shown = t.expect('sgl> ', 'runtime error')
        if '<repl>:2:' not in shown or 'division by zero' not in shown or '__' in shown:
            fail('runtime error not in the entry\'s terms:\n%s' % shown)
        t.type('len(nothing_here)\r')
        shown = t.expect('sgl> ', 'compile error')
        if '<repl>:1:5: error' not in shown or '__' in shown:
            fail('compile error not in the entry\'s terms:\n%s' % shown)

        # Redefinition: the new fn replaces the old, with a note.
        t.type('fn long(s) {\r')
        t.expect('...> ', 'redefinition')
        t.type('  s += "b"\r')
        t.expect('...> ', 'redefinition body')
        t.type('}\r')
        t.expect('note: fn long redefined', 'note on redefinition')
        t.expect('sgl> ', 'prompt after redefinition')
        t.type('text(long())\r')
        t.expect('"b"', 'the new definition runs')
        t.expect('sgl> ', 'prompt after the new definition')

        # :save, :reset, :load.
        saved = os.path.join(tmp, 'defs.sgl')
        t.type(':save %s\r' % saved)
        t.expect('saved 1 definition', ':save')
        t.expect('sgl> ', 'prompt after :save')
        t.type(':reset\r')
        t.expect('cleared', ':reset')
        t.expect('sgl> ', 'prompt after :reset')
        t.type('x\r')
        t.expect("undefined name 'x'", 'variables gone after :reset')
        t.expect('sgl> ', 'prompt after x')
        t.type(':load %s\r' % saved)
        t.expect('loaded 1 definition', ':load')
        t.expect('sgl> ', 'prompt after :load')
        t.type('text(long())\r')
        t.expect('"b"', 'the loaded definition runs')
        t.expect('sgl> ', 'prompt after the loaded definition')

        # Tab completion: a variable's name, then a : command.
        t.type('let my_long_name = 7\r')
        t.expect('sgl> ', 'let my_long_name')
        t.type('my_lo' + TAB)
        t.expect('my_long_name', 'Tab completes a variable')
        t.type(' * 6\r')
        t.expect(re.compile(r'\n42\n'), 'the completed name evaluates')
        t.expect('sgl> ', 'prompt after the completed name')
        t.type(':sta' + TAB)
        t.expect(':stats', 'Tab completes a command')
        t.type('\r')
        t.expect('requests done', 'the completed command runs')
        t.expect('sgl> ', 'prompt after :stats')

        # Ctrl-D typed while an entry runs, when the terminal is in canonical
        # mode (where Ctrl-D is the end-of-file character, which would come
        # through as a NUL byte), still leaves once the entry is done.
        t.type('let i = 0\r')
        t.expect('sgl> ', 'let i')
        t.type('print("b" + "usy"); while i < 10000000 { i += 1 }\r')
        t.expect('\nbusy', 'a long entry runs')
        t.type(CTRL_D)
        rc = t.finish('Ctrl-D typed while an entry runs')
        if rc != 0:
            fail('exit status %d after Ctrl-D; screen:\n%s' % (rc, t.screen[-2000:]))
        hist = os.path.join(tmp, 'state', 'sglc', 'history')
        if not os.path.exists(hist):
            fail('no history file at %s' % hist)
        with open(hist, encoding='utf-8', errors='replace') as f:
            text = f.read()
        if 'my_long_name' not in text:
            fail('history file lacks the typed lines:\n%s' % text)
    print('repl (pty, tiny model): ok')


if __name__ == '__main__':
    main()
