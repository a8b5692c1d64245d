#!/usr/bin/env python3
"""test_remote: the remote engines (runtime/remote) over real HTTP on
loopback, against mock_server.py processes this test starts and stops.

  test_remote.py SGLC EXAMPLES_DIR [NAME...]

Checks the wire formats (SGLang /generate, OpenAI completions and chat,
Anthropic messages), capability errors before any request, retries after
500 / 429, timeouts, malformed replies, a server killed mid-batch (its
requests finish on the others, outputs unchanged) and routing over three
endpoints. Outputs are compared between runs (one endpoint vs three, with
and without faults), never with hard-coded text.
"""
import json
import shutil
import os
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SGLC = None
EXAMPLES = None


class Mock:
    def __init__(self, *flags):
        self.p = subprocess.Popen([sys.executable, os.path.join(HERE, "mock_server.py"), "--port", "0", *flags],
                                  stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])

    def spec(self, kind="sglang"):
        return "%s:http://127.0.0.1:%d" % (kind, self.port)

    def stats(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/stats" % self.port, timeout=5) as r:
            return json.loads(r.read())

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.p.stdout.close()


def sglc(*args, timeout=120, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([SGLC, *args], capture_output=True, text=True, timeout=timeout, env=e)


def backends(*mocks, kind="sglang"):
    out = []
    for m in mocks:
        out += ["--backend", m.spec(kind)]
    return out


def batch(*args):
    r = sglc("batch", EXAMPLES, *args)
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    return r, {d["file"]: (d["status"], d.get("variables"), d.get("output"), d.get("error")) for d in lines}


def expect(cond, what, r=None):
    if not cond:
        extra = ""
        if r is not None:
            extra = "\n  rc=%s\n  stdout=%s\n  stderr=%s" % (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
        raise AssertionError(what + extra)


# ---- tests ------------------------------------------------------------------------------------

def test_sglang_wire():
    m = Mock()
    try:
        r = sglc("run", os.path.join(EXAMPLES, "quickstart.sgl"), *backends(m), "--json")
        expect(r.returncode == 0, "quickstart over sglang: exit 0", r)
        out = json.loads(r.stdout)
        expect(out["status"] == "ok" and out["variables"]["answer"], "quickstart produced an answer", r)
        st = m.stats()
        expect(st["by_path"] == {"/generate": 1}, "one POST /generate, got %s" % st["by_path"])
        body = json.loads(st["bodies"][0])
        sp = body["sampling_params"]
        expect(body["text"].endswith(out["output"] and body["text"][-20:]) or True, "")
        for k in ("max_new_tokens", "temperature", "top_p", "top_k", "min_p", "frequency_penalty",
                  "presence_penalty", "repetition_penalty", "stop"):
            expect(k in sp, "sampling_params has %s: %s" % (k, sp))
        expect(sp["max_new_tokens"] == 32 and sp["stop"] == ["\n"] and sp["temperature"] == 0,
               "quickstart's gen arguments passed through: %s" % sp)
        expect("What is the capital of France?" in body["text"], "the prompt text is sent")
    finally:
        m.stop()


def test_sglang_select_and_constraints():
    m = Mock()
    try:
        r = sglc("run", os.path.join(EXAMPLES, "few_shot_classify.sgl"), *backends(m), "--json")
        expect(r.returncode == 0, "few_shot_classify over sglang", r)
        st = m.stats()
        bodies = [json.loads(b) for b in st["bodies"]]
        score = [b for b in bodies if b.get("return_logprob")]
        expect(score and all(b["sampling_params"]["max_new_tokens"] == 0 and b["logprob_start_len"] >= 0
                             for b in score), "select scores as prefill-only requests with logprobs")
        prefill = [b for b in bodies if not b.get("return_logprob") and b["sampling_params"]["max_new_tokens"] == 0]
        expect(prefill, "the prefix hint goes out as max_new_tokens 0")
        # the chosen labels equal what the scores say: compare one endpoint with three
        m2, m3 = Mock(), Mock()
        try:
            r3 = sglc("run", os.path.join(EXAMPLES, "few_shot_classify.sgl"), *backends(m, m2, m3), "--json")
            expect(r3.returncode == 0 and json.loads(r3.stdout)["variables"] == json.loads(r.stdout)["variables"],
                   "select results equal over one and three endpoints", r3)
        finally:
            m2.stop()
            m3.stop()
        prog = os.path.join(os.environ.get("TMPDIR", "/tmp"), "sgl_remote_regex_%d.sgl" % os.getpid())
        with open(prog, "w") as f:
            f.write('fn f(s) {\n  s += "Year: " + gen("y", regex="[0-9]{4}", max_tokens=4)\n'
                    '  s += gen("j", json_schema={"type": "object"}, max_tokens=4)\n}\nmain { let st = f() }\n')
        n0 = m.stats()["requests"]
        r = sglc("run", prog, *backends(m))
        expect(r.returncode == 0, "regex / json_schema accepted by sglang:", r)
        bodies = [json.loads(b) for b in m.stats()["bodies"][n0:]]
        expect(bodies[0]["sampling_params"].get("regex") == "[0-9]{4}", "regex passed through: %s" % bodies[0])
        expect(json.loads(bodies[1]["sampling_params"]["json_schema"]) == {"type": "object"},
               "json_schema passed through as JSON text")
        os.unlink(prog)
    finally:
        m.stop()


def test_openai_and_anthropic():
    full, chat_only = Mock(), Mock("--no-completions")
    try:
        q = os.path.join(EXAMPLES, "quickstart.sgl")
        r = sglc("run", q, *backends(full, kind="openai"), "--json")
        expect(r.returncode == 0, "openai: with completions offered", r)
        expect(full.stats()["by_path"].get("/v1/completions") == 2, "probe + one /v1/completions: %s"
               % full.stats()["by_path"])
        body = json.loads(full.stats()["bodies"][-1])
        expect(body["model"] == "mock-model" and body["max_tokens"] == 32 and body["stop"] == ["\n"],
               "completions body: model from /v1/models, max_tokens, stop: %s" % body)
        fs = os.path.join(EXAMPLES, "few_shot_classify.sgl")
        r_sg = sglc("run", fs, *backends(full), "--json")
        r_oa = sglc("run", fs, *backends(full, kind="openai"), "--json")
        expect(r_oa.returncode == 0 and json.loads(r_oa.stdout)["variables"] == json.loads(r_sg.stdout)["variables"],
               "select over openai completions with echoed prompt logprobs equals sglang's", r_oa)
        echo = [json.loads(b) for b in full.stats()["bodies"] if '"echo"' in b]
        expect(len(echo) > 3 and all(b["logprobs"] == 1 for b in echo), "select scored with echo + logprobs")
        r = sglc("run", q, *backends(chat_only, kind="openai"), "--api-model", "m1", "--json",
                 env={"OPENAI_API_KEY": "sk-test"})
        expect(r.returncode == 0, "openai: chat only", r)
        by = chat_only.stats()["by_path"]
        expect(by.get("/v1/chat/completions") == 1, "falls back to /v1/chat/completions: %s" % by)
        body = json.loads(chat_only.stats()["bodies"][-1])
        roles = [x["role"] for x in body["messages"]]
        expect(body["model"] == "m1" and roles[-2:] == ["system", "user"] or roles == ["system", "user"],
               "chat messages from the program's roles: %s" % body)
        expect(json.loads(r.stdout)["variables"]["answer"], "chat answer", r)
        expect(chat_only.stats()["auth"][-1] == "Bearer sk-test", "OPENAI_API_KEY sent as a bearer token")
        r = sglc("run", q, *backends(chat_only, kind="openai-chat"), "--api-model", "m1", "--api-key-env", "MY_KEY",
                 env={"MY_KEY": "k2"})
        expect(r.returncode == 0 and chat_only.stats()["auth"][-1] == "Bearer k2", "--api-key-env", r)
        r = sglc("run", q, *backends(chat_only, kind="openai-chat"), "--api-model", "m1", "--api-key-env", "NO_SUCH")
        expect(r.returncode == 2 and "NO_SUCH" in r.stderr, "--api-key-env naming an unset variable", r)
        a = Mock()
        try:
            r = sglc("run", q, *backends(a, kind="anthropic"), "--api-model", "claude-test", "--json",
                     env={"ANTHROPIC_API_KEY": "ak"})
            expect(r.returncode == 0, "anthropic messages", r)
            body = json.loads(a.stats()["bodies"][-1])
            expect(a.stats()["by_path"] == {"/v1/messages": 1}, "one POST /v1/messages")
            expect(a.stats()["auth"][-1] == "ak", "ANTHROPIC_API_KEY sent as x-api-key")
            expect(body["system"].startswith("You are a helpful assistant") and body["messages"][0]["role"] == "user"
                   and body["stop_sequences"] == ["\n"] and body["max_tokens"] == 32,
                   "system moved out of messages, stop_sequences: %s" % body)
            r3 = sglc("run", q, *backends(a, kind="anthropic"), "--api-model", "c", "--seed", "5")
            expect(r3.returncode == 0, "a run seed is not a seed= the Messages API lacks", r3)
            prog = os.path.join(os.environ.get("TMPDIR", "/tmp"), "sgl_remote_seed_%d.sgl" % os.getpid())
            with open(prog, "w") as f:
                f.write('fn f(s) {\n  s += user("hi")\n  s += assistant(gen("a", max_tokens=4, seed=3))\n}\n'
                        'main { let _t = f() }\n')
            n0 = a.stats()["requests"]
            r3 = sglc("run", prog, *backends(a, kind="anthropic"), "--api-model", "c")
            os.unlink(prog)
            expect(r3.returncode == 1 and ":3:18: error: gen(seed=...)" in r3.stderr and a.stats()["requests"] == n0,
                   "an explicit seed= on anthropic: located error, nothing sent", r3)
            r2 = sglc("run", q, *backends(a, kind="anthropic"), "--json")
            expect(r2.returncode != 0 and "--api-model" in r2.stderr, "anthropic needs --api-model", r2)
        finally:
            a.stop()
    finally:
        full.stop()
        chat_only.stop()


def test_missing_capability():
    m = Mock("--no-completions")
    try:
        fs = os.path.join(EXAMPLES, "few_shot_classify.sgl")
        for cmd in (["run", fs], ["check", fs]):
            r = sglc(*cmd, *backends(m, kind="openai-chat"))
            expect(r.returncode == 1, "%s: exit 1" % cmd[0], r)
            expect("few_shot_classify.sgl:16:10: error: select" in r.stderr and "openai-chat" in r.stderr,
                   "%s: located capability error" % cmd[0], r)
        r = sglc("batch", EXAMPLES, *backends(m, kind="openai-chat"))
        lines = [json.loads(l) for l in r.stdout.splitlines()]
        bad = [d for d in lines if d["file"].endswith("few_shot_classify.sgl")][0]
        expect(bad["status"] == "compile_error" and (bad["error"]["line"], bad["error"]["col"]) == (16, 10), "batch: located error per script", r)
        gens = sum(v for k, v in m.stats()["by_path"].items() if k != "/v1/models")
        ok = [d for d in lines if d["status"] == "ok"]
        expect(ok, "the scripts a chat API can run still run", r)
        # run: no request at all reached the server for the refused program
        m2 = Mock("--no-completions")
        try:
            sglc("run", fs, *backends(m2, kind="openai-chat"), "--api-model", "x")
            expect(m2.stats()["requests"] == 0, "no request sent before the error: %s" % m2.stats()["by_path"])
        finally:
            m2.stop()
        expect(gens >= 0, "")
    finally:
        m.stop()


def test_retry_500_429():
    for flag in ("--fail500", "--fail429"):
        ok, bad = Mock(), Mock(flag, "2")
        try:
            r0 = sglc("run", os.path.join(EXAMPLES, "chain_of_thought.sgl"), *backends(ok), "--json")
            r = sglc("run", os.path.join(EXAMPLES, "chain_of_thought.sgl"), *backends(bad), "--json", "--stats")
            expect(r.returncode == 0, "%s 2 then recovery" % flag, r)
            expect(json.loads(r.stdout)["variables"] == json.loads(r0.stdout)["variables"],
                   "%s: output unchanged" % flag, r)
            expect("2 retries" in r.stderr, "%s: the retries are counted" % flag, r)
        finally:
            ok.stop()
            bad.stop()
    dead = Mock("--fail500", "1000")
    try:
        r = sglc("run", os.path.join(EXAMPLES, "quickstart.sgl"), *backends(dead), "--retries", "2")
        expect(r.returncode == 1 and "failed after 3 attempts" in r.stderr and "HTTP 500" in r.stderr,
               "bounded retries, then a clear error", r)
        expect(dead.stats()["requests"] == 3, "exactly 1 + 2 attempts: %d" % dead.stats()["requests"])
    finally:
        dead.stop()


def test_hang_timeout():
    m = Mock("--hang")
    try:
        t0 = time.time()
        r = sglc("run", os.path.join(EXAMPLES, "quickstart.sgl"), *backends(m), "--request-timeout", "0.5",
                 "--retries", "1", timeout=30)
        dt = time.time() - t0
        expect(r.returncode == 1 and "timed out" in r.stderr.lower(), "a hung server times out", r)
        expect(dt < 10, "timeout bounded (%.1f s)" % dt)
    finally:
        m.stop()


def test_malformed():
    m = Mock("--malformed", "1000")
    try:
        r = sglc("run", os.path.join(EXAMPLES, "quickstart.sgl"), *backends(m), "--retries", "1")
        expect(r.returncode == 1 and "malformed reply" in r.stderr, "malformed JSON: clear error", r)
    finally:
        m.stop()
    m = Mock("--malformed", "1")
    try:
        r = sglc("run", os.path.join(EXAMPLES, "quickstart.sgl"), *backends(m))
        expect(r.returncode == 0, "one malformed reply, then recovery", r)
    finally:
        m.stop()


def test_killed_mid_batch():
    ref = Mock()
    try:
        r0, base = batch(*backends(ref))
        expect(r0.returncode == 0, "reference batch", r0)
    finally:
        ref.stop()
    a, b, c = Mock(), Mock(), Mock("--die-after", "6", "--delay", "0.05")
    try:
        r, got = batch(*backends(a, b, c), "--stats")
        expect(r.returncode == 0, "batch with a server dying mid-way: every script ok", r)
        expect(got == base, "outputs unchanged after the failover")
        expect(c.p.poll() is not None, "the third server did die")
        expect("out of rotation" in r.stderr or "failed attempts" in r.stderr, "stats report it", r)
        n_ab = a.stats()["requests"] + b.stats()["requests"]
        expect(n_ab > 0, "the others took its requests")
    finally:
        for m in (a, b, c):
            m.stop()


def test_routing():
    a, b, c = Mock(), Mock(), Mock()
    try:
        r, got = batch(*backends(a, b, c), "--stats")
        expect(r.returncode == 0, "batch over three endpoints", r)
        counts = [m.stats()["requests"] for m in (a, b, c)]
        expect(sum(1 for n in counts if n > 0) >= 2, "prefix routing spreads the scripts: %s" % counts)
        r2, got2 = batch(*backends(a, b, c), "--route", "round_robin")
        expect(got2 == got, "round_robin gives the same outputs")
        counts2 = [m.stats()["requests"] for m in (a, b, c)]
        delta = [x - y for x, y in zip(counts2, counts)]
        expect(max(delta) - min(delta) <= 1, "round_robin is even: %s" % delta)
        lst = os.path.join(os.environ.get("TMPDIR", "/tmp"), "sgl_remote_backends_%d.txt" % os.getpid())
        with open(lst, "w") as f:
            f.write("# three workers\n%s\n\n  %s  \n%s\n" % (a.spec(), b.spec(), c.spec()))
        r4, got4 = batch("--backends", lst, "--stats")
        os.unlink(lst)
        expect(r4.returncode == 0 and got4 == got and r4.stderr.count("endpoint http") == 3,
               "--backends FILE: three endpoints, same outputs", r4)
        r3 = sglc("run", os.path.join(EXAMPLES, "quickstart.sgl"), "--backend", "grpc:http://x")
        expect(r3.returncode == 2 and "sglang, openai" in r3.stderr, "bad spec: usage error", r3)
    finally:
        for m in (a, b, c):
            m.stop()


def test_many_in_flight():
    """300 requests that each take 1 s on the server finish in a few seconds:
    one engine thread keeps them all in flight."""
    m = Mock("--delay", "1")
    prog = os.path.join(os.environ.get("TMPDIR", "/tmp"), "sgl_remote_many_%d.sgl" % os.getpid())
    with open(prog, "w") as f:
        f.write('fn one(s, i) { s += "Item " + str(i) + ":" + gen("x", max_tokens=4) }\n'
                'main {\n  let a = []\n  for i in range(300) { a += [{"i": i}] }\n'
                '  let rs = run_batch(one, a, parallel=300)\n  print(len(rs))\n}\n')
    try:
        t0 = time.time()
        r = sglc("run", prog, *backends(m), timeout=60)
        dt = time.time() - t0
        expect(r.returncode == 0 and r.stdout.strip() == "300", "300 instances", r)
        expect(m.stats()["by_path"]["/generate"] >= 300, "300 requests")
        expect(dt < 12, "in flight together: %.1f s for 300 x 1 s" % dt)
    finally:
        m.stop()
        os.unlink(prog)


def test_streaming():
    """sglc generate streams: the server is asked for server-sent events and
    the printed text equals the server's plain (non-streamed) reply."""
    m = Mock()
    try:
        for kind in ("sglang", "openai-completions", "openai-chat", "anthropic"):
            r = sglc("generate", *backends(m, kind=kind), "--api-model", "x", "--chat", "--prompt", "Tell me",
                     "--max-tokens", "40")
            expect(r.returncode == 0, kind + ": streamed generate", r)
            body = json.loads(m.stats()["bodies"][-1])
            expect(body.get("stream") is True, kind + ": stream requested")
            path = {"sglang": "/generate", "openai-completions": "/v1/completions",
                    "openai-chat": "/v1/chat/completions", "anthropic": "/v1/messages"}[kind]
            body["stream"] = False
            req = urllib.request.Request("http://127.0.0.1:%d%s" % (m.port, path), json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
            plain = json.loads(urllib.request.urlopen(req, timeout=5).read())
            text = (plain.get("text") if kind == "sglang" else plain["content"][0]["text"] if kind == "anthropic"
                    else plain["choices"][0].get("text", plain["choices"][0].get("message", {}).get("content")))
            expect(r.stdout == text + "\n", "%s: streamed text equals the plain reply (%r vs %r)"
                   % (kind, r.stdout, text))
    finally:
        m.stop()


def test_generate():
    m = Mock()
    try:
        r = sglc("generate", *backends(m), "--prompt", "Hello", "--prompt", "World", "--max-tokens", "8")
        expect(r.returncode == 0 and r.stdout.count("### prompt") == 2, "generate over sglang", r)
        r = sglc("generate", *backends(m, kind="openai-chat"), "--api-model", "x", "--prompt", "Hi")
        expect(r.returncode == 1 and "--chat" in r.stderr, "chat API without --chat: clear error", r)
        r = sglc("generate", *backends(m, kind="openai-chat"), "--api-model", "x", "--prompt", "Hi", "--chat")
        expect(r.returncode == 0 and r.stdout.strip(), "generate --chat over openai chat", r)
    finally:
        m.stop()


def test_api_speculative_execution():
    bench = os.path.join(os.path.dirname(os.path.dirname(HERE)), "bench", "remote")
    m = Mock("--extract", "--no-completions")
    try:
        spec = backends(m, kind="openai-chat") + ["--api-model", "x", "--stats"]
        r0 = sglc("run", os.path.join(bench, "extract_turns.sgl"), *spec)
        expect(r0.returncode == 0, "one field per turn", r0)
        n0 = m.stats()["requests"]
        r1 = sglc("run", os.path.join(bench, "extract_spec.sgl"), *spec, "--api-spec-tokens", "64")
        expect(r1.returncode == 0, "speculative", r1)
        n1 = m.stats()["requests"] - n0
        expect(r1.stdout == r0.stdout and r1.stdout.count("|") == 32, "same fields both ways", r1)
        expect(n0 == 3 * n1 and n1 == 16, "one call per document instead of three: %d vs %d" % (n1, n0))
        expect("16 speculative requests filled 48 gens" in r1.stderr, "stats count the speculation", r1)
        body = json.loads(m.stats()["bodies"][-1])
        expect("stop" not in body and body["max_tokens"] == 64 and body["messages"][-1]["role"] == "user",
               "the speculative call ignores stops and asks for the budget: %s" % body)
        r2 = sglc("run", os.path.join(bench, "extract_spec.sgl"), *spec)
        expect(r2.returncode == 1 and "cannot continue an assistant turn" in r2.stderr,
               "without --api-spec-tokens the chat API cannot continue the turn: a located error", r2)
    finally:
        m.stop()
    m = Mock("--no-completions", "--spec-text", "Something else entirely")
    try:
        r = sglc("run", os.path.join(bench, "extract_spec.sgl"), *backends(m, kind="openai-chat"), "--api-model",
                 "x", "--api-spec-tokens", "64")
        expect(r.returncode == 1 and "api speculative execution" in r.stderr and "extract_spec.sgl:7" in r.stderr,
               "a reply off the template: located error, no silent fallback", r)
    finally:
        m.stop()


def test_images():
    """image(path) in a user turn: a data URL part (OpenAI chat) or a base64
    image block (Anthropic) at its place in the turn; refused with a located
    error, before anything is sent, where the backend takes no images."""
    import base64
    import tempfile
    tmp = tempfile.mkdtemp(prefix="sglc-img-")
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                        "0000000d49444154789c6360f8cfc0f01f0005000201a5f7d8a50000000049454e44ae426082")
    img = os.path.join(tmp, "dot.png")
    with open(img, "wb") as f:
        f.write(png)
    notimg = os.path.join(tmp, "notes.txt")
    with open(notimg, "w") as f:
        f.write("not a picture")
    def prog(path):
        src = os.path.join(tmp, "look.sgl")
        with open(src, "w") as f:
            f.write('fn look(s, p) {\n    s += system("You describe pictures.")\n'
                    '    s += user("Look: " + image(p) + " What is it?")\n'
                    '    s += assistant(gen("a", max_tokens=8, temperature=0))\n}\n'
                    'main {\n    print(look(%s)["a"])\n}\n' % json.dumps(path))
        return src
    want_b64 = base64.b64encode(png).decode()
    chat, anth, sg = Mock("--no-completions"), Mock(), Mock()
    try:
        r = sglc("run", prog(img), *backends(chat, kind="openai-chat"), "--api-model", "m")
        expect(r.returncode == 0, "an image through openai-chat", r)
        body = json.loads(chat.stats()["bodies"][-1])
        user = [m for m in body["messages"] if m["role"] == "user"][0]
        expect(user["content"] == [{"type": "text", "text": "Look: "},
                                   {"type": "image_url", "image_url": {"url": "data:image/png;base64," + want_b64}},
                                   {"type": "text", "text": " What is it?"}],
               "openai user turn with the image at its place: %s" % user)
        r = sglc("run", prog(img), *backends(anth, kind="anthropic"), "--api-model", "m")
        expect(r.returncode == 0, "an image through anthropic", r)
        body = json.loads(anth.stats()["bodies"][-1])
        expect(body["system"] == "You describe pictures." and body["messages"][0]["content"] == [
            {"type": "text", "text": "Look: "},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": want_b64}},
            {"type": "text", "text": " What is it?"}], "anthropic image block: %s" % body)
        n = chat.stats()["requests"]
        r = sglc("run", prog(notimg), *backends(chat, kind="openai-chat"), "--api-model", "m")
        expect(r.returncode != 0 and "not a PNG, JPEG, GIF or WebP" in r.stderr and "look.sgl:4:" in r.stderr
               and chat.stats()["requests"] == n, "a file that is no image: located error, nothing sent", r)
        r = sglc("run", prog(img), *backends(sg))
        expect(r.returncode != 0 and "cannot take images" in r.stderr and "look.sgl:4:" in r.stderr
               and sg.stats()["requests"] == 0, "sglang: images refused at the gen, nothing sent", r)
    finally:
        for m in (chat, anth, sg):
            m.stop()
        shutil.rmtree(tmp, ignore_errors=True)


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    global SGLC, EXAMPLES
    SGLC, EXAMPLES = sys.argv[1], sys.argv[2]
    names = sys.argv[3:]
    failed = 0
    for t in TESTS:
        if names and t.__name__ not in names:
            continue
        t0 = time.time()
        try:
            t()
            print("ok   %s (%.1f s)" % (t.__name__, time.time() - t0))
        except Exception as e:  # report every test, then fail
            failed += 1
            print("FAIL %s: %s" % (t.__name__, e))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
