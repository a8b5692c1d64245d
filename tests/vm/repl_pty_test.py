#!/usr/bin/env python3
# repl_pty_test.py: `sglc repl --fake` driven through a real pseudo-terminal,
# typed the way a person would: a multi-line fn definition (continuation
# prompt), a variable kept between entries, a line fixed with the arrow keys
# and a typed character, the up arrow recalling and re-running an earlier
# entry, :help, :graph FN, :stats and :quit. Every step waits (with a
# timeout) for its answer on the screen before the next is typed.
# usage: repl_pty_test.py SGLC
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

UP, LEFT = '\x1b[A', '\x1b[D'
STEP_TIMEOUT = 30.0
CHILD = []  # the repl's pid, ended by fail()


class Term:
    def __init__(self, argv):
        env = dict(os.environ, TERM='vt100', NO_COLOR='1', COLUMNS='200', LINES='50')
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe(argv[0], argv, env)
        CHILD.append(self.pid)
        self.screen = ''  # everything shown so far (escape sequences removed)
        self.mark = 0

    def _read(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return None
        if not data:
            return None
        text = data.decode('utf-8', 'replace')
        text = re.sub(r'\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>()][0-9A-Za-z]?|\r|\x07', '', text)
        self.screen += text.replace('\x08', '')
        return True

    def expect(self, what, step):
        """Waits until `what` (a string or compiled regex) shows after the mark;
        returns the text from the mark to the end of the match, moves the mark."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            tail = self.screen[self.mark:]
            if isinstance(what, str):
                i = tail.find(what)
                end = i + len(what) if i >= 0 else -1
            else:
                m = what.search(tail)
                end = m.end() if m else -1
            if end >= 0:
                self.mark += end
                return tail[:end]
            left = deadline - time.monotonic()
            if left <= 0 or self._read(min(left, 1.0)) is None:
                fail('%s: waited for %r; the screen after the last step shows:\n%s' % (step, what, tail))

    def type(self, text):
        # One key at a time, as typed; an arrow key's escape sequence in one write.
        for key in re.findall(r'\x1b\[[A-D]|.', text, re.S):
            os.write(self.fd, key.encode())
            time.sleep(0.002)

    def finish(self):
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                CHILD.remove(self.pid)
                return os.waitstatus_to_exitcode(status)
            self._read(0.2)
        fail('sglc repl did not exit after :quit')


def fail(msg):
    print('FAIL: ' + msg)
    for pid in CHILD:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    sys.exit(1)


def main():
    sglc = sys.argv[1]
    helptext = subprocess.run([sglc, 'repl', '--help'], capture_output=True, text=True, timeout=30).stdout
    if 'Line editing and history' not in helptext:
        print('SKIP: sglc was built without libedit (no line editing to test)')
        sys.exit(77)
    t = Term([sglc, 'repl', '--fake'])
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
    rc = t.finish()
    if rc != 0:
        fail('exit status %d; screen:\n%s' % (rc, t.screen[-2000:]))
    print('repl (pty): ok')


if __name__ == '__main__':
    main()
