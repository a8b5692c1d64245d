#!/usr/bin/env python3
"""e2e_serve: the remote engines against real `sglc serve` processes on
loopback (one, then three), started and stopped here, on the default model.

  e2e_serve.py SGLC EXAMPLES_DIR MODEL

* every example program gives the same output through sglang: as locally
  (gens, seeded samples and select results included), over one endpoint,
  and over three with one of them killed mid-way;
* quickstart through openai: (completions and chat) and anthropic:
  (/v1/messages) gives the local answer.
Skips (exit 77) when this build has no `sglc serve` or the model is missing.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

SGLC, EXAMPLES, MODEL = sys.argv[1:4]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Serve:
    def __init__(self):
        self.port = free_port()
        self.p = subprocess.Popen([SGLC, "serve", "--model", MODEL, "--port", str(self.port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError("sglc serve exited: " + self.p.stderr.read()[-1000:])
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/v1/models" % self.port, timeout=1).read()
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("sglc serve did not start")

    def spec(self, kind="sglang"):
        return "%s:http://127.0.0.1:%d" % (kind, self.port)

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def sglc(*args):
    # Greedy unless a program says otherwise (--temperature 0), and a fixed
    # run seed (seeds travel with all 64 bits, so sampled gens draw alike
    # too; test_router.py checks that on the tiny model).
    return subprocess.run([SGLC, *args, "--seed", "7", "--temperature", "0"], capture_output=True, text=True,
                          timeout=600)


def batch_lines(out):
    return {d["file"]: (d["status"], d.get("variables"), d.get("output"))
            for d in (json.loads(l) for l in out.splitlines() if l.strip())}


def main():
    h = sglc("serve", "--help")
    if h.returncode != 0 or "--port" not in h.stdout + h.stderr:
        print("skip: this build has no `sglc serve --port`")
        sys.exit(77)
    if not os.path.exists(MODEL):
        print("skip: no model at " + MODEL)
        sys.exit(77)
    examples = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".sgl"))
    failed = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failed.append(what)

    # Every example as one batch (the outputs of a batch equal those of
    # separate runs: the engine's determinism guarantee).
    lb = sglc("batch", EXAMPLES, "--model", MODEL)
    local = batch_lines(lb.stdout)
    check(lb.returncode == 0 and len(local) == len(examples), "local batch of the examples")
    servers = [Serve()]
    try:
        rb = sglc("batch", EXAMPLES, "--model", MODEL, "--backend", servers[0].spec())
        remote = batch_lines(rb.stdout)
        for f in sorted(local):
            check(remote.get(f) == local[f], "%s through sglang: equals local" % os.path.basename(f))
        q = os.path.join(EXAMPLES, "quickstart.sgl")
        lq = sglc("run", q, "--model", MODEL)
        for kind in ("openai-completions", "openai-chat", "anthropic"):
            r = sglc("run", q, "--model", MODEL, "--backend", servers[0].spec(kind), "--api-model", "default")
            check(r.returncode == 0 and r.stdout == lq.stdout, "quickstart through " + kind)
        servers += [Serve(), Serve()]
        specs = sum((["--backend", s.spec()] for s in servers), [])
        p = subprocess.Popen([SGLC, "batch", EXAMPLES, "--model", MODEL, "--stats", "--seed", "7", "--temperature", "0",
                              *specs], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        servers[2].stop()
        out, err = p.communicate(timeout=600)
        check(p.returncode == lb.returncode and batch_lines(out) == local,
              "every example over three endpoints, one killed mid-way: outputs equal local")
        m = re.search(r"endpoint http://127.0.0.1:%d: (\d+) requests, (\d+) failed" % servers[2].port, err)
        check(m is not None and int(m.group(2)) > 0, "the killed endpoint's failures were seen and re-sent: "
              + (m.group(0) if m else err[-300:]))
    finally:
        for s in servers:
            s.stop()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
