#!/usr/bin/env python3
"""mock_server: a small inference server for the remote-engine tests.

Speaks the public wire formats the remote engines use -- SGLang's
POST /generate, OpenAI's /v1/models, /v1/completions and
/v1/chat/completions, Anthropic's /v1/messages -- over a toy "model": bytes
are tokens (id = byte + 1), replies and logprobs are deterministic functions
of the prompt, and a prefix cache (longest common prefix with any earlier
prompt) reports cached tokens the way each API does.

Fault switches (for the retry / failover tests):
  --fail500 N      the first N requests answer HTTP 500
  --fail429 N      the first N requests answer HTTP 429
  --hang           never answer generation requests
  --malformed N    the first N requests answer 200 with broken JSON
  --die-after N    exit abruptly while holding the (N+1)th request
  --no-completions /v1/completions answers 404 (a chat-only API)
  --delay S        wait S seconds before answering
  --extract        chat replies fill fields: a last user turn with
                   "FIELDS: Name, Age, Job" gets "Name: ..\nAge: ..\nJob: ..\n", one
                   with "FIELD: Age" gets the value alone; the values are a
                   function of the first user turn (the document)

Prints "PORT <n>" on stdout once listening (--port 0 picks a free port).
GET /stats returns {"requests": n, "by_path": {...}, "bodies": [...]}.
"""
import argparse
import json
import os
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None
LOCK = threading.Lock()
STATE = {"requests": 0, "by_path": {}, "bodies": [], "prompts": []}


def crc(s):
    return zlib.crc32(s.encode("utf-8", "surrogatepass") if isinstance(s, str) else bytes(s))


def toks(text):
    return [b + 1 for b in text.encode("utf-8")]


def detok(ids):
    return bytes(i - 1 for i in ids if 0 < i <= 256).decode("utf-8", "replace")


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
         "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"]


def reply(prompt, max_tokens, stop, fixed=None):
    """Deterministic continuation: words picked by a hash of the prompt, cut
    at a stop string and at max_tokens bytes. Returns (text, finish, matched)."""
    h = crc(prompt)
    out = " ".join(WORDS[(h >> (4 * k)) % 16] for k in range(6)) + "."
    if fixed is not None:
        out = fixed
    elif ARGS.spec_text is not None:
        out = ARGS.spec_text
    finish, matched = "length", None
    cut = len(out)
    for s in stop or []:
        i = out.find(s)
        if s and 0 <= i < cut:
            cut, matched = i, s
    if matched is not None:
        finish = "stop"
    text = out[:cut]
    b = text.encode("utf-8")
    if len(b) > max_tokens:
        text, finish, matched = b[:max_tokens].decode("utf-8", "ignore"), "length", None
    elif matched is None:
        finish = "stop"  # the toy model's EOS after its sentence
    return text, finish, matched


def logprob(prefix_ids, tok):
    return -((zlib.crc32(bytes(str(prefix_ids[-8:]) + ":" + str(tok), "ascii")) % 5000) / 1000.0) - 0.01


def cached_len(prompt):
    best = 0
    for p in STATE["prompts"]:
        k = len(os.path.commonprefix([p, prompt]))
        if k > best:
            best = k
    STATE["prompts"].append(prompt)
    return len(prompt[:best].encode("utf-8"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, obj=None, raw=None, headers=()):
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/models":
            return self.send(200, {"object": "list", "data": [{"id": "mock-model", "object": "model"}]})
        if self.path == "/stats":
            with LOCK:
                return self.send(200, {k: STATE[k] for k in ("requests", "by_path", "bodies")})
        return self.send(404, {"error": "not found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        with LOCK:
            STATE["requests"] += 1
            k = STATE["requests"]
            STATE["by_path"][self.path] = STATE["by_path"].get(self.path, 0) + 1
            STATE["bodies"].append(raw.decode("utf-8", "replace")[:2000])
        if ARGS.die_after is not None and k > ARGS.die_after:
            os._exit(3)
        if ARGS.hang:
            time.sleep(3600)
        if ARGS.delay:
            time.sleep(ARGS.delay)
        if k <= ARGS.fail500:
            return self.send(500, {"error": "injected failure"})
        if k <= ARGS.fail429:
            return self.send(429, {"error": "rate limited"})
        if k <= ARGS.malformed:
            return self.send(200, raw=b'{"text": "broken", "meta_info": {')
        try:
            req = json.loads(raw)
        except ValueError:
            return self.send(400, {"error": "bad JSON"})
        try:
            if self.path == "/generate":
                return self.send(200, self.generate(req))
            if self.path == "/v1/completions":
                if ARGS.no_completions:
                    return self.send(404, {"error": "not found"})
                return self.send(200, self.completions(req))
            if self.path == "/v1/chat/completions":
                return self.send(200, self.chat(req))
            if self.path == "/v1/messages":
                return self.send(200, self.messages(req))
        except (KeyError, TypeError, ValueError) as e:
            return self.send(400, {"error": "bad request: %s" % e})
        return self.send(404, {"error": "not found"})

    def generate(self, req):
        sp = req.get("sampling_params") or {}
        if "text" in req:
            prompt = req["text"]
            ids = toks(prompt)
        else:
            ids = list(req["input_ids"])
            prompt = detok(ids)
        with LOCK:
            cached = min(cached_len(prompt), max(len(ids) - 1, 0))
        maxn = int(sp.get("max_new_tokens", 128))
        meta = {"id": "m", "prompt_tokens": len(ids), "cached_tokens": cached}
        if maxn == 0:
            text, finish, matched = "", "length", None
        else:
            text, finish, matched = reply(prompt, maxn, sp.get("stop"))
        out_ids = toks(text)
        meta["completion_tokens"] = len(out_ids)
        meta["finish_reason"] = {"type": finish, "matched": matched} if finish == "stop" else {"type": "length", "length": maxn}
        if req.get("return_logprob"):
            start = int(req.get("logprob_start_len", -1))
            if start >= 0:
                meta["input_token_logprobs"] = [[None if i == 0 else logprob(ids[:i], ids[i]), ids[i], None]
                                                for i in range(start, len(ids))]
            full = ids[:]
            olp = []
            for t in out_ids:
                olp.append([logprob(full, t), t, None])
                full.append(t)
            meta["output_token_logprobs"] = olp
        return {"text": text, "output_ids": out_ids, "meta_info": meta}

    def usage(self, prompt, text):
        with LOCK:
            cached = cached_len(prompt)
        return {"prompt_tokens": len(prompt.encode()), "completion_tokens": len(text.encode()),
                "total_tokens": len(prompt.encode()) + len(text.encode()),
                "prompt_tokens_details": {"cached_tokens": cached}}

    def completions(self, req):
        prompt = req["prompt"]
        stop = req.get("stop")
        stop = [stop] if isinstance(stop, str) else stop
        text, finish, matched = reply(prompt, int(req.get("max_tokens", 16)), stop)
        return {"object": "text_completion", "model": req.get("model"),
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "stop_reason": matched}],
                "usage": self.usage(prompt, text)}

    def render(self, msgs, system=None):
        out = "" if system is None else "[system]" + system + "\n"
        for m in msgs:
            out += "[%s]%s\n" % (m["role"], m["content"])
        return out + "[assistant]"

    def extract(self, msgs):
        users = [m["content"] for m in msgs if m["role"] == "user"]
        h = crc(users[0].split("\nFIELD", 1)[0])
        record = {"name": WORDS[h % 16].title() + " " + WORDS[(h >> 4) % 16].title(),
                  "age": str(20 + (h >> 8) % 50), "job": WORDS[(h >> 16) % 16] + " keeper"}
        last = users[-1]
        if "FIELDS:" in last:
            fields = [f.strip() for f in last.split("FIELDS:", 1)[1].split(",")]
            return "".join("%s: %s\n" % (f, record.get(f.lower(), "?")) for f in fields)
        if "FIELD:" in last:
            return record.get(last.split("FIELD:", 1)[1].strip().lower(), "?") + "\n"
        return None

    def chat(self, req):
        prompt = self.render(req["messages"])
        fixed = self.extract(req["messages"]) if ARGS.extract else None
        stop = req.get("stop")
        stop = [stop] if isinstance(stop, str) else stop
        text, finish, matched = reply(prompt, int(req.get("max_tokens", 16)), stop, fixed)
        return {"object": "chat.completion", "model": req.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish}],
                "usage": self.usage(prompt, text)}

    def messages(self, req):
        msgs = req["messages"]
        if not msgs or msgs[0]["role"] != "user":
            raise ValueError("messages must start with a user turn")
        prefill = msgs[-1]["content"] if msgs[-1]["role"] == "assistant" else ""
        prompt = self.render(msgs if not prefill else msgs[:-1], req.get("system")) + prefill
        text, finish, matched = reply(prompt, int(req["max_tokens"]), req.get("stop_sequences"))
        with LOCK:
            cached = cached_len(prompt)
        return {"type": "message", "role": "assistant", "model": req.get("model"),
                "content": [{"type": "text", "text": text}],
                "stop_reason": {"stop": "stop_sequence" if matched else "end_turn", "length": "max_tokens"}[finish],
                "stop_sequence": matched,
                "usage": {"input_tokens": len(prompt.encode()) - cached, "cache_read_input_tokens": cached,
                          "output_tokens": len(text.encode())}}


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--fail500", type=int, default=0)
    ap.add_argument("--fail429", type=int, default=0)
    ap.add_argument("--malformed", type=int, default=0)
    ap.add_argument("--hang", action="store_true")
    ap.add_argument("--die-after", type=int, default=None)
    ap.add_argument("--no-completions", action="store_true")
    ap.add_argument("--delay", type=float, default=0)
    ap.add_argument("--spec-text", default=None, help="every reply is this text (cut at stops)")
    ap.add_argument("--extract", action="store_true")
    ARGS = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    srv.daemon_threads = True
    print("PORT %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
