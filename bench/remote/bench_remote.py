#!/usr/bin/env python3
"""bench_remote: remote-engine figures (prints them; no pass/fail).

1. Routing: the shared-prefix program workload -- few-shot classification
   and tree-of-thought instances over 8 shared prefixes (--instances, at
   least 256) -- run by `sglc run` over three workers, with --route prefix
   and --route round_robin: aggregate cache hit rate and programs/s.
2. API speculative execution: the three-field extraction program through
   openai-chat: API calls and input tokens with --api-spec-tokens
   (extract_spec.sgl) against one field per turn (extract_turns.sgl).

Workers: tests/remote/mock_server.py (default: a bounded prefix cache and
simulated compute per uncached prompt byte, one request computing at a
time), or `--workers serve --model PATH`: three `sglc serve` processes
(when the build has that command).

  bench_remote.py [--sglc build/sglc] [--instances 256] [--workers mock|serve]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MOCK = os.path.join(ROOT, "tests", "remote", "mock_server.py")

TOPICS = ["movies", "restaurants", "hotels", "phones", "books", "games", "flights", "courses"]


def prefix_text(k):
    """A few-shot prefix (about 1.5 KB) for topic k."""
    lines = ["You label %s reviews as positive or negative. Examples follow." % TOPICS[k]]
    for j in range(14):
        lines.append("Review: The %s number %d was %s in every way I can describe here.\nSentiment: %s"
                     % (TOPICS[k][:-1], j, "wonderful" if j % 2 else "dreadful", "positive" if j % 2 else "negative"))
    return "\n\n".join(lines) + "\n\n"


def workload(n):
    """An SGL program: n instances over 8 shared prefixes, half few-shot
    classification (select), half tree-of-thought (fork, gen, select)."""
    prefixes = ",\n".join('    "%s"' % prefix_text(k).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                          for k in range(8))
    return """
fn classify(s, prefix, text) {
    s += prefix + "Review: " + text + "\\nSentiment:" + select("label", [" positive", " negative"])
}

fn tot(s, prefix, text) {
    s += prefix + "Question: what would improve this? " + text + "\\n"
    let b = fork(s, 2)
    for i in range(2) {
        b[i] += "Idea " + str(i + 1) + ":" + gen("idea", max_tokens=12, stop=["\\n"], temperature=0)
        b[i] += "\\nIs this idea practical? Answer:" + select("rating", [" yes", " no"])
    }
    join(b)
}

main {
    let prefixes = [
%s
    ]
    let cs = []
    let ts = []
    for i in range(%d) {
        let a = {"prefix": prefixes[i %% 8], "text": f"Review {i}: it was fine, mostly, apart from item {i}."}
        if i %% 2 == 0 { cs += [a] } else { ts += [a] }
    }
    let r1 = run_batch(classify, cs, parallel=64)
    let r2 = run_batch(tot, ts, parallel=64)
    print(len(r1) + len(r2))
}
""" % (prefixes, n)


class Worker:
    def __init__(self, kind, args, model=None):
        if kind == "mock":
            self.p = subprocess.Popen([sys.executable, MOCK, "--port", "0", *args], stdout=subprocess.PIPE, text=True)
            self.port = int(self.p.stdout.readline().split()[1])
        else:
            import socket
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
            s.close()
            self.p = subprocess.Popen([args[0], "serve", "--model", model, "--port", str(self.port), *args[1:]],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            import urllib.request
            for _ in range(300):
                try:
                    urllib.request.urlopen("http://127.0.0.1:%d/v1/models" % self.port, timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.2)

    def stop(self):
        self.p.kill()
        self.p.wait()


def run(sglc, prog, specs, *extra):
    args = [sglc, "run", prog, "--stats", *extra]
    for s in specs:
        args += ["--backend", s]
    t0 = time.time()
    r = subprocess.run(args, capture_output=True, text=True)
    dt = time.time() - t0
    if r.returncode != 0:
        sys.exit("bench_remote: sglc failed:\n" + r.stderr[-2000:])
    return r, dt


def endpoint_totals(stderr):
    pt = ct = req = 0
    for m in re.finditer(r"endpoint \S+: (\d+) requests.*?prompt (\d+) tokens, (\d+) cached", stderr):
        req += int(m.group(1))
        pt += int(m.group(2))
        ct += int(m.group(3))
    return req, pt, ct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sglc", default=os.path.join(ROOT, "build", "sglc"))
    ap.add_argument("--instances", type=int, default=256)
    ap.add_argument("--workers", choices=["mock", "serve"], default="mock")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--skip-spec", action="store_true", help="routing figures only")
    ap.add_argument("--cache-bytes", type=int, default=4000, help="mock: prefix cache per worker")
    ap.add_argument("--prefill-us", type=float, default=40.0, help="mock: compute per uncached byte")
    ap.add_argument("--kv-tokens", type=int, default=1500, help="serve: KV pool per worker (cache included)")
    ap.add_argument("--threads", type=int, default=1, help="serve: CPU threads per worker")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        prog = os.path.join(tmp, "shared_prefix.sgl")
        with open(prog, "w") as f:
            f.write(workload(a.instances))
        print("routing: %d program instances over 8 shared prefixes, 3 %s workers" % (a.instances, a.workers))
        results = {}
        for policy in ("prefix", "round_robin"):
            ws = [Worker(a.workers, ["--cache-bytes", str(a.cache_bytes), "--prefill-us", str(a.prefill_us)]
                         if a.workers == "mock" else
                         [a.sglc, "--kv-tokens", str(a.kv_tokens), "--threads", str(a.threads)], a.model)
                  for _ in range(3)]
            try:
                r, dt = run(a.sglc, prog, ["sglang:http://127.0.0.1:%d" % w.port for w in ws], "--route", policy)
            finally:
                for w in ws:
                    w.stop()
            req, pt, ct = endpoint_totals(r.stderr)
            per = re.findall(r"endpoint \S+: (\d+) requests", r.stderr)
            hit = ct / pt if pt else 0.0
            results[policy] = (hit, a.instances / dt)
            print("  %-11s hit rate %5.1f%%  %6.1f programs/s  (%d requests; per worker %s; %.2f s)"
                  % (policy, 100 * hit, a.instances / dt, req, "/".join(per), dt))
        (hp, sp), (hr, sr) = results["prefix"], results["round_robin"]
        print("  prefix / round_robin: hit rate x%.2f, programs/s x%.2f" % (hp / hr if hr else float("inf"), sp / sr))

    if a.skip_spec:
        return
    print("api speculative execution: 16 three-field extractions through openai-chat")
    w = Worker("mock", ["--extract", "--no-completions"])
    try:
        spec = "openai-chat:http://127.0.0.1:%d" % w.port
        out = {}
        for name, extra in (("one field per turn", []), ("speculative", ["--api-spec-tokens", "64"])):
            prog = os.path.join(HERE, "extract_turns.sgl" if not extra else "extract_spec.sgl")
            r, dt = run(a.sglc, prog, [spec], "--api-model", "mock", *extra)
            m = re.search(r"stats: (\d+) generate.*?prompt (\d+) tokens", r.stderr)
            out[name] = (int(m.group(1)), int(m.group(2)), r.stdout)
            print("  %-19s %3d API calls, %6d input tokens" % (name, out[name][0], out[name][1]))
        (c0, t0, o0), (c1, t1, o1) = out["one field per turn"], out["speculative"]
        print("  saving: x%.2f fewer calls, x%.2f fewer input tokens; same fields: %s"
              % (c0 / c1, t0 / t1, "yes" if o0 == o1 else "NO"))
    finally:
        w.stop()


if __name__ == "__main__":
    main()
