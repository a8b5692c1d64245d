# srvutil.py: starts `sglc serve` on a free loopback port for a test and
# stops it (SIGTERM, checked to exit 0). Shared by the server tests.
import os
import re
import signal
import subprocess
import threading
import time


class Server:
    def __init__(self, sglc, model, *extra, threads=2):
        self.log_lines = []
        self.proc = subprocess.Popen(
            [sglc, 'serve', '--model', model, '--port', '0', '--threads', str(threads)] + list(extra),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = None
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log_lines.append(line)
            m = re.search(r'listening on http://127\.0\.0\.1:(\d+)', line)
            if m:
                self.port = int(m.group(1))
                break
        if not self.port:
            self.proc.kill()
            raise RuntimeError('server did not start: ' + ''.join(self.log_lines))
        self.url = 'http://127.0.0.1:%d' % self.port
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log_lines.append(line)

    def stop(self, timeout=30):
        """SIGTERM; returns (exit status, seconds to exit)."""
        if self.proc.poll() is not None:
            return self.proc.returncode, 0.0
        t0 = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        return rc, time.time() - t0

    def __enter__(self):
        return self

    def __exit__(self, *a):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def metric(text, name):
    """Value of an unlabelled metric in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith(name + ' '):
            return float(line.split()[1])
    return None
