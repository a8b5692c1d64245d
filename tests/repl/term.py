# term.py: a program run on a pseudo-terminal for the tests in tests/repl
# and tests/vm/repl_pty_test.py: keys typed one at a time, and waits (with a
# generous timeout) for text to show on the screen, so the tests never sleep
# for a guessed time.
import os
import pty
import re
import select
import signal
import sys
import time

STEP_TIMEOUT = 90.0
CHILDREN = []  # pids still running, ended by fail()


def fail(msg):
    print('FAIL: ' + msg)
    for pid in CHILDREN:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
    sys.exit(1)


class Term:
    def __init__(self, argv, env=None):
        env = dict(os.environ if env is None else env, TERM='vt100', NO_COLOR='1')
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe(argv[0], argv, env)
        CHILDREN.append(self.pid)
        self.raw = b''    # every byte the program wrote
        self.screen = ''  # the same with escape sequences and \r removed
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
        self.raw += data
        text = data.decode('utf-8', 'replace')
        text = re.sub(r'\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>()][0-9A-Za-z]?|\r|\x07', '', text)
        self.screen += text.replace('\x08', '')
        return True

    def expect(self, what, step):
        """Waits until `what` (a string or compiled regex) shows after the
        mark; returns the text from the mark to the end of the match and
        moves the mark there."""
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
                fail('%s: waited for %r; the screen after the last step ends:\n%s' % (step, what, tail[-3000:]))

    def type(self, text):
        # One key at a time, as typed; an arrow key's escape sequence in one write.
        for key in re.findall(r'\x1b\[[A-D]|.', text, re.S):
            os.write(self.fd, key.encode())
            time.sleep(0.002)

    def finish(self, step):
        """Waits for the program to exit (reading what it still writes);
        returns its exit status."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                CHILDREN.remove(self.pid)
                while self._read(0.05):
                    pass
                return os.waitstatus_to_exitcode(status)
            self._read(0.2)
        fail('%s: the program did not exit; the screen ends:\n%s' % (step, self.screen[-2000:]))
