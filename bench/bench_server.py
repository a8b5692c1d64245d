#!/usr/bin/env python3
"""bench_server: a loopback load generator for `sglc serve` (or any server
speaking SGLang's /generate or OpenAI's /v1/completions).

After a warm-up (--warmup requests at full concurrency), C concurrent
clients (threads, one keep-alive connection each) send N requests in all: short prompts that share a few long-ish prefixes (a system
text + a question), M output tokens each, greedy, a given fraction streamed.
Bounded in count (--requests) and time (--time-limit: no new request after
it). Prints requests/s, latency p50/p99, time to first token p50/p99 (over
the streamed requests: first data event carrying text), errors, and the
server's resident memory at start (after a warm-up), peak and end (sampled
from /proc every 0.1 s; needs the server's pid: --pid, or --serve starts one).

  bench/bench_server.py --serve build/sglc --threads 2 --requests 10000 --clients 64
  bench/bench_server.py --url http://127.0.0.1:8080 --api openai --pid PID   # another server

--api openai uses /v1/completions (so llama.cpp's llama-server can be
measured the same way); --api native uses /generate.
"""
import argparse
import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time

PREFIXES = [
    "You are a helpful assistant. Answer every question in one short sentence, "
    "without preamble, and never ask a question back. ",
    "The following is a quiz about geography, history and science. Each answer "
    "is a single word or a number. ",
    "Translate the user's words into plain English, keeping their meaning. If they "
    "are already English, repeat them. ",
    "You are a terse librarian. Recommend exactly one book for each request, "
    "title only. ",
]
QUESTIONS = ["What is the capital of Peru?", "Name a prime number.", "Why is the sky blue?",
             "Who wrote Hamlet?", "What is 7 times 8?", "Name a red fruit.", "bonjour", "A book on tides?",
             "Largest ocean?", "What do bees make?", "Boiling point of water?", "Name a planet."]


def rss_kb(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def run(self):
        while not self.stop:
            v = rss_kb(self.pid) or 0
            self.peak = max(self.peak, v)
            time.sleep(0.1)


def one_request(conn, api, prompt, max_new, stream, key):
    if api == 'native':
        path = '/generate'
        body = {'text': prompt, 'sampling_params': {'max_new_tokens': max_new, 'temperature': 0}, 'stream': stream}
    else:
        path = '/v1/completions'
        body = {'prompt': prompt, 'max_tokens': max_new, 'temperature': 0, 'stream': stream}
    headers = {'Content-Type': 'application/json'}
    if key:
        headers['Authorization'] = 'Bearer ' + key
    t0 = time.perf_counter()
    conn.request('POST', path, body=json.dumps(body), headers=headers)
    resp = conn.getresponse()
    ttft = None
    if resp.status != 200:
        resp.read()
        return False, time.perf_counter() - t0, None
    if not stream:
        data = json.loads(resp.read())
        ok = ('text' in data) if api == 'native' else bool(data.get('choices'))
        return ok, time.perf_counter() - t0, None
    done = False
    while True:
        line = resp.readline()
        if not line:
            break
        if line.startswith(b'data:'):
            if line.strip() == b'data: [DONE]':
                done = True
                continue
            if ttft is None:
                ttft = time.perf_counter() - t0
    return done, time.perf_counter() - t0, ttft


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--url', default='http://127.0.0.1:30000')
    ap.add_argument('--serve', metavar='SGLC', help='start `SGLC serve` on a free port for the run')
    ap.add_argument('--model', default='models/SmolLM2-135M-Instruct.Q4_1.gguf')
    ap.add_argument('--threads', type=int, default=2, help='server threads (with --serve)')
    ap.add_argument('--server-args', default='', help='more `sglc serve` options (with --serve)')
    ap.add_argument('--pid', type=int, help='server pid, for its memory figures')
    ap.add_argument('--api', choices=['native', 'openai'], default='native')
    ap.add_argument('--api-key')
    ap.add_argument('--clients', type=int, default=64)
    ap.add_argument('--requests', type=int, default=10000)
    ap.add_argument('--time-limit', type=float, default=600, help='seconds; no new request after')
    ap.add_argument('--max-new', type=int, default=16)
    ap.add_argument('--stream-fraction', type=float, default=0.5)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--warmup', type=int, default=256, help='requests sent before measuring')
    a = ap.parse_args()

    proc = None
    if a.serve:
        proc = subprocess.Popen([a.serve, 'serve', '--model', a.model, '--port', '0', '--threads', str(a.threads)] + a.server_args.split(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = proc.stderr.readline()
        m = re.search(r'listening on (http://[0-9.]+:\d+)', line)
        if not m:
            sys.exit('server did not start: ' + line)
        a.url, a.pid = m.group(1), proc.pid
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # drop the log
    host, port = a.url.split('//')[1].rsplit(':', 1)
    port = int(port.rstrip('/'))

    def make_work(n, seed):
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            prompt = rng.choice(PREFIXES) + 'Question: ' + rng.choice(QUESTIONS) + ' (%d)\nAnswer:' % rng.randrange(100)
            out.append((prompt, rng.random() < a.stream_fraction))
        return out

    work = make_work(a.requests, a.seed)

    lat_stream, lat_plain = [], []

    def run_phase(work):
        """Sends work from a.clients threads; returns (sent, latencies, ttfts, errors, seconds)."""
        lock = threading.Lock()
        nxt = [0]
        lat, ttfts, errors = [], [], [0]
        del lat_stream[:], lat_plain[:]
        t_start = time.perf_counter()
        deadline = t_start + a.time_limit

        def client():
            conn = http.client.HTTPConnection(host, port, timeout=600)
            while True:
                with lock:
                    i = nxt[0]
                    if i >= len(work) or time.perf_counter() > deadline:
                        break
                    nxt[0] += 1
                prompt, stream = work[i]
                try:
                    try:
                        ok, dt, tf = one_request(conn, a.api, prompt, a.max_new, stream, a.api_key)
                    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                        # A server may close a kept-alive connection after a
                        # reply (llama-server does after a stream): the request
                        # was not read, so it goes again on a new connection,
                        # as HTTP clients do, and is an error only if that fails.
                        conn.close()
                        conn = http.client.HTTPConnection(host, port, timeout=600)
                        ok, dt, tf = one_request(conn, a.api, prompt, a.max_new, stream, a.api_key)
                except (OSError, http.client.HTTPException, ValueError):
                    ok, dt, tf = False, 0, None
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=600)
                with lock:
                    if ok:
                        lat.append(dt)
                        (lat_stream if stream else lat_plain).append(dt)
                        if tf is not None:
                            ttfts.append(tf)
                    else:
                        errors[0] += 1
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return nxt[0], lat, ttfts, errors[0], time.perf_counter() - t_start

    # Warm-up at full concurrency (the KV pool and cache fill up), so the
    # start figure is the warm server's.
    _, _, _, warm_errors, warm_s = run_phase(make_work(a.warmup, a.seed + 1))
    print('warm-up: %d requests in %.1f s, %d errors' % (a.warmup, warm_s, warm_errors))
    time.sleep(0.5)
    rss_start = rss_kb(a.pid) if a.pid else None
    sampler = Sampler(a.pid) if a.pid else None
    if sampler:
        sampler.start()
    sent, lat, ttfts, n_errors, elapsed = run_phase(work)
    time.sleep(0.5)
    rss_end = rss_kb(a.pid) if a.pid else None
    if sampler:
        sampler.stop = True

    def pct(v, q):
        if not v:
            return float('nan')
        v = sorted(v)
        return v[min(len(v) - 1, int(q * len(v)))]

    print('bench_server: %s (%s API), %d clients, %d of %d requests sent in %.1f s%s' % (
        a.url, a.api, a.clients, sent, a.requests, elapsed,
        ' (time limit reached)' if sent < a.requests else ''))
    print('  %d output tokens max, %.0f%% streamed, %d shared prefixes' % (a.max_new, 100 * a.stream_fraction,
                                                                           len(PREFIXES)))
    print('  requests/s %.2f' % (len(lat) / elapsed))
    print('  latency p50 %.3f s, p99 %.3f s, mean %.3f s' % (pct(lat, 0.5), pct(lat, 0.99),
                                                           statistics.mean(lat) if lat else float('nan')))
    print('  latency streamed p50 %.3f s, p99 %.3f s; not streamed p50 %.3f s, p99 %.3f s' % (
        pct(lat_stream, 0.5), pct(lat_stream, 0.99), pct(lat_plain, 0.5), pct(lat_plain, 0.99)))
    print('  TTFT (streamed) p50 %.3f s, p99 %.3f s over %d requests' % (pct(ttfts, 0.5), pct(ttfts, 0.99), len(ttfts)))
    print('  errors %d (warm-up %d)' % (n_errors, warm_errors))
    if a.pid:
        peak = max(sampler.peak, rss_start or 0, rss_end or 0)
        print('  server RSS: start %.1f MiB, peak %.1f MiB, end %.1f MiB (end/start %.3f)' % (
            rss_start / 1024, peak / 1024, rss_end / 1024, rss_end / rss_start))
    if proc:
        proc.terminate()
        proc.wait(timeout=60)
    return 1 if n_errors or warm_errors else 0


if __name__ == '__main__':
    sys.exit(main())
