#!/usr/bin/env python3
"""bench_remote: remote-engine figures (prints them; no pass/fail).

1. Routing: the shared-prefix program workload -- few-shot classification
   and tree-of-thought instances over 8 shared prefixes (--instances, at
   least 256) -- run by `sglc run` over three workers, with --route prefix
   and --route round_robin: aggregate cache hit rate and programs/s.
2. API speculative execution: the three-field extraction program through
   openai-chat: API calls and input tokens with --api-spec-tokens
   (extract_spec.sgl) against one field per turn (extract_turns.sgl).

Workers: three `sglc serve` processes on the default model (--workers
serve, the default; each with a KV pool of --kv-tokens, so that a few
prefixes fit), behind an `sglc serve --backend ... --policy P` router
(--via router, the default; `sglc run` talks to the router, and the hit
rate is the workers' own cached / prompt tokens from the router's
/metrics) or routed by `sglc run --route P` itself (--via client). The
extraction runs against one `sglc serve` through openai-chat: with
extract_form_spec.sgl / extract_form_turns.sgl (worked examples the small
model follows). --workers mock uses tests/remote/mock_server.py instead (a
bounded prefix cache, simulated compute per uncached prompt byte, one
request computing at a time) with extract_spec.sgl / extract_turns.sgl.

  bench_remote.py [--sglc build/sglc] [--instances 256] [--workers serve|mock]
                  [--via router|client] [--shots N] [--max-tokens N]
"""
import json
import urllib.request
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


def prefix_text(k, shots):
    """A few-shot prefix (about 110 bytes a shot) for topic k."""
    lines = ["You label %s reviews as positive or negative. Examples follow." % TOPICS[k]]
    for j in range(shots):
        lines.append("Review: The %s number %d was %s in every way I can describe here.\nSentiment: %s"
                     % (TOPICS[k][:-1], j, "wonderful" if j % 2 else "dreadful", "positive" if j % 2 else "negative"))
    return "\n\n".join(lines) + "\n\n"


def workload(n, shots, max_tokens, parallel, labels):
    """An SGL program: n instances over 8 shared prefixes, half few-shot
    classification, half tree-of-thought (fork, gen, then a rating per
    branch). Labels and ratings are picked by select (labels "select": a
    prefill and three scoring requests each over /generate) or by a gen
    constrained to the choices by a regex (labels "regex": one request)."""
    def pick(name, choices):
        if labels == "select":
            return 'select("%s", [%s])' % (name, ", ".join('"%s"' % c for c in choices))
        return 'gen("%s", regex="%s", max_tokens=4, temperature=0)' % (name, "(" + "|".join(choices) + ")")
    prefixes = ",\n".join('    "%s"' % prefix_text(k, shots).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                          for k in range(8))
    return """
fn classify(s, prefix, text) {
    s += prefix + "Review: " + text + "\\nSentiment:" + %s
}

fn tot(s, prefix, text) {
    s += prefix + "Question: what would improve this? " + text + "\\n"
    let b = fork(s, 2)
    for i in range(2) {
        b[i] += "Idea " + str(i + 1) + ":" + gen("idea", max_tokens=%d, stop=["\\n"], temperature=0)
        b[i] += "\\nIs this idea practical? Answer:" + %s
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
        # each batch cycles through all 8 prefixes
        let a = {"prefix": prefixes[(i / 2) %% 8], "text": f"Review {i}: it was fine, mostly, apart from item {i}."}
        if i %% 2 == 0 { cs += [a] } else { ts += [a] }
    }
    let r1 = run_batch(classify, cs, parallel=%d)
    let r2 = run_batch(tot, ts, parallel=%d)
    print(len(r1) + len(r2))
}
""" % (pick("label", [" positive", " negative"]), max_tokens, pick("rating", [" yes", " no"]), prefixes, n,
       parallel, parallel)


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
            self.p = subprocess.Popen([args[0], "serve", *(["--model", model] if model else []),
                                       "--port", str(self.port), *args[1:]],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(600):
                try:
                    urllib.request.urlopen("http://127.0.0.1:%d/health" % self.port, timeout=5).read()
                    return
                except OSError:
                    if self.p.poll() is not None:
                        sys.exit("bench_remote: sglc serve exited with %s" % self.p.returncode)
                    time.sleep(0.2)
            sys.exit("bench_remote: sglc serve did not start")

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


def router_totals(port):
    """The workers' figures as the router's /metrics reports them."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=30).read().decode()
    tot = {}
    for name in ("requests", "prompt_tokens", "cached_tokens"):
        tot[name] = [float(v) for v in re.findall(r"sglc_worker_%s_total\{[^}]*\} (\S+)" % name, text)]
    return int(sum(tot["requests"])), int(sum(tot["prompt_tokens"])), int(sum(tot["cached_tokens"])), \
        "/".join("%d" % v for v in tot["requests"])


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
    ap.add_argument("--workers", choices=["serve", "mock"], default="serve")
    ap.add_argument("--via", choices=["router", "client"], default="router",
                    help="serve: route in an `sglc serve` router, or in `sglc run`")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--skip-spec", action="store_true", help="routing figures only")
    ap.add_argument("--skip-routing", action="store_true", help="speculative execution figures only")
    ap.add_argument("--shots", type=int, default=None, help="examples per prefix (serve 3, mock 14)")
    ap.add_argument("--max-tokens", type=int, default=None, help="tokens per tree-of-thought idea (serve 4, mock 12)")
    ap.add_argument("--parallel", type=int, default=None, help="instances in flight (serve 24, mock 64)")
    ap.add_argument("--labels", choices=["select", "regex"], default=None,
                    help="labels and ratings by select or by a regex-constrained gen (serve regex, mock select)")
    ap.add_argument("--cache-bytes", type=int, default=4000, help="mock: prefix cache per worker")
    ap.add_argument("--prefill-us", type=float, default=40.0, help="mock: compute per uncached byte")
    ap.add_argument("--kv-tokens", type=int, default=500, help="serve: KV pool per worker (cache included)")
    ap.add_argument("--threads", type=int, default=1, help="serve: CPU threads per worker")
    a = ap.parse_args()
    serve = a.workers == "serve"
    shots = a.shots if a.shots is not None else (3 if serve else 14)
    max_tokens = a.max_tokens if a.max_tokens is not None else (4 if serve else 12)

    if not a.skip_routing:
        routing(a, serve, shots, max_tokens)
    if not a.skip_spec:
        speculative(a, serve)


def routing(a, serve, shots, max_tokens):
    with tempfile.TemporaryDirectory() as tmp:
        prog = os.path.join(tmp, "shared_prefix.sgl")
        with open(prog, "w") as f:
            f.write(workload(a.instances, shots, max_tokens, a.parallel or (24 if serve else 64),
                             a.labels or ("regex" if serve else "select")))
        via = " via an sglc serve router" if serve and a.via == "router" else ""
        print("routing: %d program instances over 8 shared prefixes (%d shots, %d-token ideas, labels by %s), "
              "3 %s workers%s" % (a.instances, shots, max_tokens, a.labels or ("regex" if serve else "select"),
                                  a.workers, via), flush=True)
        results = {}
        for policy in ("prefix", "round_robin"):
            ws = [Worker(a.workers, ["--cache-bytes", str(a.cache_bytes), "--prefill-us", str(a.prefill_us)]
                         if not serve else
                         [a.sglc, "--kv-tokens", str(a.kv_tokens), "--threads", str(a.threads)], a.model)
                  for _ in range(3)]
            specs = ["sglang:http://127.0.0.1:%d" % w.port for w in ws]
            router = None
            try:
                if serve and a.via == "router":
                    router = Worker("serve", [a.sglc, *sum([["--backend", sp] for sp in specs], []),
                                              "--policy", "cache_aware" if policy == "prefix" else policy],
                                    model=None)
                    r, dt = run(a.sglc, prog, ["sglang:http://127.0.0.1:%d" % router.port], "--temperature", "0")
                    req, pt, ct, per = router_totals(router.port)
                else:
                    r, dt = run(a.sglc, prog, specs, "--route", policy, "--temperature", "0")
                    req, pt, ct = endpoint_totals(r.stderr)
                    per = "/".join(re.findall(r"endpoint \S+: (\d+) requests", r.stderr))
            finally:
                for w in ws + ([router] if router else []):
                    w.stop()
            hit = ct / pt if pt else 0.0
            results[policy] = (hit, a.instances / dt)
            name = "cache_aware" if policy == "prefix" else policy
            print("  %-11s hit rate %5.1f%%  %6.2f programs/s  (%d requests, %d of %d prompt tokens cached; per worker %s; %.1f s)"
                  % (name, 100 * hit, a.instances / dt, req, ct, pt, per, dt), flush=True)
        (hp, sp), (hr, sr) = results["prefix"], results["round_robin"]
        print("  cache_aware / round_robin: hit rate x%.2f, programs/s x%.2f" % (hp / hr if hr else float("inf"), sp / sr))


def speculative(a, serve):
    print("api speculative execution: 16 three-field extractions through openai-chat%s"
          % (" against sglc serve" if serve else " (mock)"), flush=True)
    w = Worker("serve", [a.sglc, "--threads", str(a.threads)], a.model) if serve else \
        Worker("mock", ["--extract", "--no-completions"])
    try:
        spec = "openai-chat:http://127.0.0.1:%d" % w.port
        out = {}
        for name, extra in (("one field per turn", []), ("speculative", ["--api-spec-tokens", "48"])):
            prog = os.path.join(HERE, ("extract_form_%s.sgl" if serve else "extract_%s.sgl")
                                % ("spec" if extra else "turns"))
            r, dt = run(a.sglc, prog, [spec], "--api-model", "m", "--temperature", "0", *extra)
            m = re.search(r"stats: (\d+) generate.*?prompt (\d+) tokens", r.stderr)
            out[name] = (int(m.group(1)), int(m.group(2)), r.stdout.splitlines())
            print("  %-19s %3d API calls, %6d input tokens  (%.1f s)" % (name, out[name][0], out[name][1], dt),
                  flush=True)
        (c0, t0, o0), (c1, t1, o1) = out["one field per turn"], out["speculative"]
        same = sum(x == y for x, y in zip(o0, o1))
        print("  saving: x%.2f fewer calls, x%.2f fewer input tokens; documents with the same three fields: %d of %d"
              % (c0 / c1, t0 / t1, same, len(o1)))
        if serve:
            truth = expected_fields()
            print("  fields as in the document: %d of 16 one field per turn, %d of 16 speculative"
                  % (sum(x == y for x, y in zip(o0, truth)), sum(x == y for x, y in zip(o1, truth))))
    finally:
        w.stop()


def expected_fields():
    """What extract_form_*.sgl's documents say (the same formula)."""
    names = ["John Smith", "Ana Costa", "Li Wei", "Peter Brown", "Sara Khan", "Tom Berg", "Eva Novak", "Raj Patel"]
    jobs = ["teacher", "nurse", "pilot", "farmer", "lawyer", "chef", "dentist", "plumber"]
    return ["%s | %d | %s" % (names[i % 8], 30 + i, jobs[(i + i // 8) % 8]) for i in range(16)]


if __name__ == "__main__":
    main()
