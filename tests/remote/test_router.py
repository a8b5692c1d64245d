#!/usr/bin/env python3
"""test_router: `sglc serve --backend ...` as a router in front of three real
`sglc serve` workers on loopback (tiny model), all started and stopped here.

  test_router.py SGLC MODEL

* every route answers through the router exactly as a worker answers
  directly (greedy): /generate (plain, batched, streamed), /v1/completions,
  /v1/chat/completions (plain and streamed), /v1/messages,
  /v1/programs/run; bad JSON is the router's 400, a worker's 400 passes;
* cache_aware routing keeps a shared prefix on one worker; round_robin
  spreads the same requests evenly; /metrics shows the per-worker counts;
* a worker killed while 24 requests are in flight: every request still
  gets the direct answer, the dead worker is out of rotation;
* no worker left: /health 503 and a 502 naming the failure.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import tempfile
import time
import urllib.error
import urllib.request

SGLC, MODEL = sys.argv[1:3]
FAILS = []
TMP = tempfile.mkdtemp(prefix="sglc-router-")


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Proc:
    def __init__(self, args):
        self.port = free_port()
        self.p = subprocess.Popen([SGLC, "serve", "--port", str(self.port)] + args,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError("sglc serve exited: " + self.p.stderr.read()[-1000:])
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sglc serve did not start")

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.p.stderr.close()


def post(url, body, raw=False, timeout=60):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            return r.status, (text if raw else json.loads(text))
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return e.code, (text if raw else json.loads(text))


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sglc(*args):
    p = subprocess.run([SGLC, *args], capture_output=True, timeout=120)
    if p.returncode:
        FAILS.append("sglc %s: %s" % (" ".join(args[:3]), p.stderr[-500:]))
        print("FAIL: sglc", args[:3], p.stderr[-500:], flush=True)
    return p.stdout


def scrub(x):
    """An answer without what differs between any two calls (ids, times,
    cache figures)."""
    if isinstance(x, dict):
        return {k: scrub(v) for k, v in x.items()
                if k not in ("id", "created", "e2e_latency", "cached_tokens", "prompt_tokens_details",
                             "cache_read_input_tokens", "elapsed_s", "stats")}
    if isinstance(x, list):
        return [scrub(v) for v in x]
    return x


def sse_text(raw):
    """The data payloads of an event stream (a cut-off one ends early)."""
    return [line[5:].strip() for line in raw.splitlines() if line.startswith("data:")]


def worker_counts(router):
    _, m = get(router.url + "/metrics")
    counts = {}
    for line in m.splitlines():
        g = re.match(r'sglc_worker_requests_total\{worker="([^"]+)"\} (\S+)', line)
        if g:
            counts[g.group(1)] = float(g.group(2))
    return counts, m


GEN = {"sampling_params": {"max_new_tokens": 12, "temperature": 0}}


def main():
    workers = [Proc(["--model", MODEL, "--threads", "1"]) for _ in range(3)]
    direct = workers[0]
    procs = list(workers)
    try:
        back = sum([["--backend", "sglang:" + w.url] for w in workers], [])
        router = Proc(back + ["--policy", "cache_aware", "--request-timeout", "20"])
        procs.append(router)

        # ---- the same answers as a worker gives directly ----
        cases = [
            ("/generate", dict(GEN, text="The capital of France is")),
            ("/generate", dict(GEN, text=["one two three", "four five"])),
            ("/generate", dict(GEN, input_ids=[1, 5, 9, 12, 30])),
            ("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi there"}],
                                       "max_tokens": 10, "temperature": 0}),
            ("/v1/messages", {"model": "m", "max_tokens": 10, "temperature": 0,
                              "messages": [{"role": "user", "content": "Hello"}]}),
            ("/v1/programs/run", {"source": 'main {\n    let s = "Q: 1+1\\nA:" + gen("a", max_tokens=6, temperature=0)\n'
                                            '    print(s["a"])\n}\n'}),
            ("/generate", {"text": "x", "sampling_params": {"max_new_tokens": -3}}),  # the worker's 400
        ]
        for path, body in cases:
            s1, a1 = post(direct.url + path, body)
            s2, a2 = post(router.url + path, body)
            check(s1 == s2 and scrub(a1) == scrub(a2),
                  "%s %s: router %d %s vs direct %d %s" % (path, json.dumps(body)[:60], s2, str(a2)[:200], s1,
                                                          str(a1)[:200]))
        for path, body in [("/generate", dict(GEN, text="Streaming works", stream=True)),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Stream"}],
                                                     "max_tokens": 8, "temperature": 0, "stream": True})]:
            s1, r1 = post(direct.url + path, body, raw=True)
            s2, r2 = post(router.url + path, body, raw=True)
            e1 = [scrub(json.loads(x)) if x != "[DONE]" else x for x in sse_text(r1)]
            e2 = [scrub(json.loads(x)) if x != "[DONE]" else x for x in sse_text(r2)]
            check(s1 == s2 == 200 and len(e2) > 2 and e1 == e2,
                  "%s streamed: router %d %s vs direct %s" % (path, s2, r2[:200], r1[:200]))
        s, out = post(router.url + "/v1/programs/run", cases[6][1])
        check(s == 200 and "outputs" in json.dumps(out) or "output" in json.dumps(out),
              "program run through the router: %d %s" % (s, str(out)[:300]))

        # ---- seeds travel exactly (all 64 bits): sampled draws equal the local engine's ----
        prog = os.path.join(TMP, "seeded.sgl")
        with open(prog, "w") as f:
            f.write('fn tell(s, t) {\n    s += "About " + t + ":"\n    s += gen("x", max_tokens=16, temperature=1.0)\n}\n'
                    'main {\n    for t in ["cats", "dogs", "rain", "ships"] {\n        print(tell(t)["x"])\n    }\n}\n')
        runs = {}
        # the VM derives a 64-bit seed per request from the run seed
        for seed in ["12345", "99991"]:
            # (the server's JSON carries invalid UTF-8 from the tiny model as U+FFFD)
            local = sglc("run", prog, "--model", MODEL, "--seed", seed).decode("utf-8", "replace")
            remote = sglc("run", prog, "--backend", "sglang:" + direct.url, "--seed", seed).decode("utf-8", "replace")
            check(local == remote and local, "seed %s: through sglang: %r, locally %r" % (seed, remote, local))
            runs[seed] = local
        check(len(set(runs.values())) == 2, "two run seeds drew the same text: the check cannot tell seeds apart")
        # 2^60 + k are the same double: read exactly, they draw differently
        ids = {}
        for seed in [2 ** 60 + 1, 2 ** 60 + 2, 2 ** 60 + 1]:
            body = (b'{"text": "Once upon", "sampling_params": {"max_new_tokens": 24, "temperature": 1, '
                    b'"sampling_seed": %d}}' % seed)
            s, got = post(router.url + "/generate", body)
            check(s == 200, "sampling_seed %d: %d %s" % (seed, s, got))
            ids.setdefault(seed, []).append(got.get("output_ids"))
        check(ids[2 ** 60 + 1][0] == ids[2 ** 60 + 1][1], "one seed, two draws: %s" % ids)
        check(ids[2 ** 60 + 1][0] != ids[2 ** 60 + 2][0], "seeds 2^60+1 and 2^60+2 drew the same tokens")
        s, e = post(router.url + "/generate", b'{"text": "x", "sampling_params": {"sampling_seed": 18446744073709551616}}')
        check(s == 400 and "64-bit integer" in json.dumps(e), "seed 2^64: %d %s" % (s, e))

        s, e = post(router.url + "/generate", b"{bad json")
        check(s == 400 and "malformed JSON" in json.dumps(e), "bad JSON: %d %s" % (s, e))
        s, e = post(router.url + "/no_such_route", GEN)
        check(s == 404, "unknown route: %d" % s)

        # ---- cache_aware keeps a prefix on one worker; /metrics counts ----
        before, _ = worker_counts(router)
        prefix = "You are a classifier. Label each review as good or bad. " * 3
        for i in range(9):
            post(router.url + "/generate", dict(GEN, text=prefix + "Review %d:" % i))
        after, metrics = worker_counts(router)
        delta = sorted(after[u] - before.get(u, 0) for u in after)
        check(len(after) == 3 and delta == [0, 0, 9], "cache_aware spread one prefix as %s" % delta)
        check("sglc_worker_cached_tokens_total" in metrics and "sglc_worker_up" in metrics
              and 'route="/generate",status="200"' in metrics, "router /metrics:\n" + metrics[:600])
        cached = sum(float(x) for x in re.findall(r'sglc_worker_cached_tokens_total\{[^}]*\} (\S+)', metrics))
        check(cached > 0, "no cached tokens reported by the workers")
        rr = Proc(back + ["--policy", "round_robin"])
        procs.append(rr)
        before, _ = worker_counts(rr)
        for i in range(9):
            post(rr.url + "/generate", dict(GEN, text=prefix + "Review %d:" % i))
        after, _ = worker_counts(rr)
        delta = sorted(after[u] - before.get(u, 0) for u in after)
        check(delta == [3, 3, 3], "round_robin spread 9 requests as %s" % delta)

        # ---- a worker killed with requests in flight: nothing lost ----
        long_gen = {"max_new_tokens": 120, "temperature": 0, "ignore_eos": True}
        bodies = [{"text": "Topic %d: %s" % (i, "alpha beta gamma " * (i % 4)), "sampling_params": long_gen}
                  for i in range(24)]
        want = [scrub(post(direct.url + "/generate", b)[1]) for b in bodies]
        got = [None] * len(bodies)

        def one(i):
            got[i] = post(router.url + "/generate", bodies[i], timeout=120)

        # The victim is frozen first, so that its share of the requests is
        # surely in flight (connected, unanswered) when it dies.
        victim = workers[1]
        victim.p.send_signal(signal.SIGSTOP)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        time.sleep(1.0)
        victim.stop()
        for t in threads:
            t.join()
        bad = [i for i in range(len(bodies)) if not got[i] or got[i][0] != 200 or scrub(got[i][1]) != want[i]]
        check(not bad, "requests lost or changed after a worker was killed: %s (%s)" %
              (bad, [got[i] for i in bad[:2]]))
        _, metrics = worker_counts(router)
        failed = re.search(r'sglc_worker_failed_attempts_total\{worker="%s"\} (\S+)' % re.escape(victim.url), metrics)
        check(failed and float(failed.group(1)) > 0, "the killed worker had no failed attempt (killed too late?)")
        s, _ = get(router.url + "/health")
        check(s == 200, "/health with two workers up: %d" % s)

        # ---- no worker left ----
        for w in workers:
            w.stop()
        s, e = post(router.url + "/generate", GEN | {"text": "anyone?"})
        check(s == 502 and "no worker answered" in json.dumps(e), "all workers down: %d %s" % (s, e))
        s, _ = get(router.url + "/health")
        check(s == 503, "/health with no worker: %d" % s)
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(TMP, ignore_errors=True)
    if FAILS:
        print("%d check(s) failed" % len(FAILS))
        return 1
    print("router: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
