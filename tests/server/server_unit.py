#!/usr/bin/env python3
# server_unit.py: `sglc serve` on the tiny test model (suite unit): every
# bad-input case checked for status and error body (malformed JSON, wrong
# types and unknown fields naming the field, 413 over --max-body, prompts
# over the context, unknown routes, wrong methods, API keys, constraints that
# do not compile refused as 400 naming the field, streamed or not);
# constraints (regex, response_format json_schema / json_object, ebnf) obeyed;
# a client that disconnects from a streamed program run cancels its engine
# requests (metrics show it, nothing left running; /generate is checked on
# the default model in server_e2e.py, where a generation outlasts the
# close); SIGTERM with a stream and an endless program in flight exits 0
# (the stream finishes, the program is aborted after --shutdown-timeout);
# programs compiled and run by 32 connections at once equal their lone
# runs; /flush_cache empties the radix cache (a repeated prompt's
# cached_tokens drops to 0, sglc_cache_tokens to 0, same output) and is
# refused with 400 while a request runs; and a seeded random-body run over every route's body parser (each reply a
# 2xx/4xx with a JSON body, the server alive after).
# usage: server_unit.py SGLC TINY_MODEL [SEED [BODIES]]
import json
import os
import random
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from srvutil import Server, metric  # noqa: E402

try:
    import requests
except ImportError:
    print('SKIP: the requests package is missing (run scripts/setup)')
    sys.exit(77)


def expect_error(resp, status, param=None, words=None, anthropic=False):
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    if anthropic:
        assert body['type'] == 'error' and body['error']['message'], body
    else:
        assert body['error']['message'], body
        if param is not None:
            assert body['error']['param'] == param, body
    msg = body['error']['message']
    for w in words or []:
        assert w in msg, (w, msg)
    return msg


def bad_inputs(url):
    s = requests.Session()
    # malformed JSON, empty body, non-object
    expect_error(s.post(url + '/generate', data='{"text": "hi"'), 400, words=['malformed JSON'])
    expect_error(s.post(url + '/v1/completions', data=''), 400, words=['empty'])
    expect_error(s.post(url + '/v1/completions', data='[1,2]'), 400)
    # wrong types and unknown fields name the field
    expect_error(s.post(url + '/v1/completions', json={'prompt': 'a', 'max_tokens': 'ten'}), 400, 'max_tokens')
    expect_error(s.post(url + '/v1/completions', json={'prompt': 'a', 'temperature': 2.5}), 400, 'temperature')
    expect_error(s.post(url + '/v1/chat/completions', json={'messages': [{'role': 'user', 'content': 'a'}],
                                                            'frobnicate': 1}), 400, 'frobnicate', ['unknown field'])
    expect_error(s.post(url + '/v1/chat/completions', json={'messages': [{'role': 'wizard', 'content': 'a'}]}),
                 400, 'messages[0].role')
    expect_error(s.post(url + '/v1/chat/completions', json={'messages': [{'role': 'user', 'content': 5}]}),
                 400, 'messages[0].content')
    expect_error(s.post(url + '/generate', json={'text': 'a', 'sampling_params': {'temprature': 0}}),
                 400, 'sampling_params.temprature', ['unknown field'])
    expect_error(s.post(url + '/generate', json={'text': 'a', 'sampling_params': {'max_new_tokens': 1.5}}),
                 400, 'sampling_params.max_new_tokens')
    expect_error(s.post(url + '/generate', json={'input_ids': [1, 99999]}), 400, 'input_ids')
    expect_error(s.post(url + '/generate', json={'text': 'a', 'input_ids': [1]}), 400)
    expect_error(s.post(url + '/v1/messages', json={'messages': [{'role': 'user', 'content': 'a'}]}), 400,
                 words=['max_tokens'], anthropic=True)
    expect_error(s.post(url + '/v1/messages', json={'max_tokens': 4, 'messages': [], 'x': 1}), 400,
                 words=["'x'"], anthropic=True)
    expect_error(s.post(url + '/v1/programs/run', json={'source': 'main { print(1) }', 'args': 'x'}), 400, 'args')
    expect_error(s.post(url + '/v1/programs/run', json={'source': 'main { print( }'}), 400, 'source')
    expect_error(s.post(url + '/v1/programs/run', json={'file': 'x.sgl'}), 400, 'file')
    expect_error(s.post(url + '/v1/programs/run', json={'source': 'main { print(read_file("/etc/hostname")) }'}),
                 400, 'source', ['--allow-io'])
    # oversize body (server started with --max-body 65536)
    expect_error(s.post(url + '/generate', data='{"text": "' + 'a' * 70000 + '"}'), 413)
    # prompt over the context (the tiny model's is 256 tokens)
    expect_error(s.post(url + '/generate', json={'input_ids': [5] * 300}), 400, 'input_ids', ['context'])
    expect_error(s.post(url + '/v1/completions', json={'prompt': 'word ' * 400}), 400, 'prompt', ['context'])
    # unknown route, wrong method
    expect_error(s.get(url + '/v2/nothing'), 404)
    expect_error(s.get(url + '/generate'), 405)
    # constraints that do not compile: a 400 naming the field, streamed or not
    for stream in (False, True):
        r = s.post(url + '/v1/chat/completions', json={
            'messages': [{'role': 'user', 'content': 'a'}], 'max_tokens': 4, 'stream': stream,
            'response_format': {'type': 'json_schema', 'json_schema': {
                'name': 'x', 'schema': {'type': 'array', 'uniqueItems': True}}}})
        expect_error(r, 400, 'response_format', ['uniqueItems', '/uniqueItems'])
        r = s.post(url + '/generate', json={'text': 'a', 'stream': stream,
                                           'sampling_params': {'regex': '[0-9', 'max_new_tokens': 4}})
        expect_error(r, 400, 'sampling_params.regex', ['regex:', 'offset'])
    expect_error(s.post(url + '/generate', json={'text': 'a', 'sampling_params': {'ebnf': 'root ::= ("a"'}}),
                 400, 'sampling_params.ebnf', ['grammar:'])
    expect_error(s.post(url + '/v1/completions', json={'prompt': 'a', 'regex': 'a', 'json_schema': '{}'}),
                 400, 'regex', ['one of'])
    # every reply above was a JSON error; the good path still works
    r = s.post(url + '/generate', json={'text': 'hello', 'sampling_params': {'max_new_tokens': 3, 'temperature': 0}})
    assert r.status_code == 200 and r.json()['meta_info']['completion_tokens'] <= 3, r.text
    # a 0-token request (prefix caching, select) generates no token, whatever it asks for
    r = s.post(url + '/generate', json={'text': 'hello there', 'sampling_params': {'max_new_tokens': 0},
                                       'return_logprob': True, 'top_logprobs_num': 2, 'logprob_start_len': 0})
    meta = r.json()['meta_info']
    assert r.status_code == 200 and meta['output_token_logprobs'] == [] and meta['completion_tokens'] == 0, meta
    assert meta['input_token_logprobs'][0][0] is None and len(meta['input_token_logprobs']) == meta['prompt_tokens']
    m = s.get(url + '/metrics').text
    assert 'sglc_requests_total{route="/generate",status="400"}' in m, m
    assert 'sglc_requests_total{route="other",status="404"}' in m, m


def constraints(url):
    """Constraints through each route are obeyed (the tiny model's output is
    noise, so every structure in it comes from the mask)."""
    s = requests.Session()
    r = s.post(url + '/generate', json={'text': 'Code:', 'sampling_params': {
        'regex': '[A-Z]{3}-[0-9]{2}', 'max_new_tokens': 16, 'temperature': 0}})
    assert r.status_code == 200 and re.fullmatch('[A-Z]{3}-[0-9]{2}', r.json()['text']), r.text
    r = s.post(url + '/generate', json={'text': 'List:', 'sampling_params': {
        'ebnf': 'root ::= "(" item ("," item)? ")"\nitem ::= [a-c]\n', 'max_new_tokens': 16, 'temperature': 0}})
    assert r.status_code == 200 and re.fullmatch(r'\([a-c](,[a-c])?\)', r.json()['text']), r.text
    schema = {'type': 'object', 'properties': {'ok': {'type': 'boolean'}, 'n': {'enum': [1, 2, 3]}},
              'required': ['ok', 'n'], 'additionalProperties': False}
    r = s.post(url + '/v1/chat/completions', json={
        'messages': [{'role': 'user', 'content': 'JSON please'}], 'max_tokens': 32, 'temperature': 0,
        'response_format': {'type': 'json_schema', 'json_schema': {'name': 'x', 'schema': schema}}})
    assert r.status_code == 200, r.text
    v = json.loads(r.json()['choices'][0]['message']['content'])
    assert set(v) == {'ok', 'n'} and isinstance(v['ok'], bool) and v['n'] in (1, 2, 3), v
    r = s.post(url + '/v1/completions', json={'prompt': 'x', 'max_tokens': 48, 'temperature': 0,
                                              'response_format': {'type': 'json_object'}})
    assert r.status_code == 200 and r.json()['choices'][0]['text'].startswith('{'), r.text


def concurrent_programs(url):
    """Programs compiled and run by many connections at once give what they give alone."""
    import concurrent.futures
    srcs = ['fn f%d(s, x) {\n  s += "item %d " + x + gen("a", max_tokens=%d, temperature=0)\n}\n'
            'main { let st = f%d("q")\n print(st["a"]) }\n' % (i, i, 2 + i % 5, i) for i in range(16)]
    alone = [requests.post(url + '/v1/programs/run', json={'source': src}).json() for src in srcs]
    assert all(r['status'] == 'ok' for r in alone), alone
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        together = list(ex.map(lambda src: requests.post(url + '/v1/programs/run', json={'source': src}).json(),
                               srcs * 2))
    for i, r in enumerate(together):
        ref = alone[i % len(srcs)]
        assert (r['status'], r['output'], r['variables']) == (ref['status'], ref['output'], ref['variables']), (r, ref)


def api_key(sglc, model):
    with Server(sglc, model, '--api-key', 'sekrit') as srv:
        assert requests.get(srv.url + '/health').status_code == 200
        expect_error(requests.get(srv.url + '/v1/models'), 401)
        expect_error(requests.get(srv.url + '/v1/models', headers={'Authorization': 'Bearer nope'}), 401)
        r = requests.get(srv.url + '/v1/models', headers={'Authorization': 'Bearer sekrit'})
        assert r.status_code == 200 and r.json()['data'][0]['id'], r.text
        rc, _ = srv.stop()
        assert rc == 0, rc


def wait_cancelled(url, before, route):
    deadline = time.time() + 20
    while time.time() < deadline:
        m = requests.get(url + '/metrics').text
        if metric(m, 'sglc_cancelled_disconnect_total') > before and metric(m, 'sglc_num_running_reqs') == 0 \
                and metric(m, 'sglc_num_waiting_reqs') == 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError('the disconnected stream was not cancelled:\n' + m)
    assert 'route="%s",status="499"' % route in m, m


def open_stream(url, path, body):
    host, port = url.split('//')[1].split(':')
    body = json.dumps(body)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(('POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                  'Content-Length: %d\r\n\r\n%s' % (path, len(body), body)).encode())
    got = b''
    while b'data:' not in got:
        got += sock.recv(4096)
    assert b'200' in got.split(b'\r\n')[0], got[:100]
    return sock


def disconnect(url):
    """A streamed program that would generate forever; the client leaves."""
    before = metric(requests.get(url + '/metrics').text, 'sglc_cancelled_disconnect_total')
    src = ('fn g(s) { s += "once" + gen("a", max_tokens=100, ignore_eos=true) }\n'
           'main { while true { let st = g()\n print(st["a"]) } }\n')
    sock = open_stream(url, '/v1/programs/run', {'source': src, 'stream': True})
    sock.close()
    wait_cancelled(url, before, '/v1/programs/run')


def random_value(rng, depth=0):
    k = rng.randrange(9 if depth < 3 else 6)
    if k == 0: return None
    if k == 1: return rng.random() < 0.5
    if k == 2: return rng.randint(-5, 300)
    if k == 3: return rng.uniform(-3, 3)
    if k == 4: return ''.join(rng.choice('ab \n{}"\\\u00e9\u4e2d\ud83d\ude00') for _ in range(rng.randrange(8)))
    if k == 5: return rng.choice(['', 'user', 'text', 'json_object', 'json_schema', 'assistant'])
    if k == 6: return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(['text', 'role', 'content', 'type', 'max_new_tokens', 'x']): random_value(rng, depth + 1)
            for _ in range(rng.randrange(4))}


VALID = {
    '/v1/completions': {'prompt': 'hi', 'max_tokens': 2, 'temperature': 0, 'n': 2, 'stop': ['x'],
                        'logprobs': 2, 'seed': 3, 'stream': False},
    '/v1/chat/completions': {'messages': [{'role': 'system', 'content': 's'}, {'role': 'user', 'content': 'hi'}],
                             'max_tokens': 2, 'logprobs': True, 'top_logprobs': 1, 'stream': False,
                             'stream_options': {'include_usage': True}},
    '/generate': {'text': ['hi', 'yo'], 'sampling_params': {'max_new_tokens': 2, 'stop': 'x'},
                  'return_logprob': True, 'logprob_start_len': 0, 'top_logprobs_num': 1, 'stream': False},
    '/v1/messages': {'model': 'm', 'max_tokens': 2, 'system': 's',
                     'messages': [{'role': 'user', 'content': [{'type': 'text', 'text': 'hi'}]}]},
    '/v1/programs/run': {'source': 'fn f(s, x) { s += x + gen("a", max_tokens=2) }', 'function': 'f',
                         'batch': [['a'], ['b']], 'stream': False},
}
LIMITS = {'max_tokens': 3, 'max_new_tokens': 3, 'n': 2}


def mutate(rng, body):
    b = json.loads(json.dumps(body))
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(5)
        target = b
        if op < 4 and isinstance(b.get('sampling_params'), dict) and rng.random() < 0.3:
            target = b['sampling_params']
        keys = list(target.keys())
        if op == 0 and keys:
            del target[rng.choice(keys)]
        elif op == 1 and keys:
            target[rng.choice(keys)] = random_value(rng)
        elif op == 2:
            target[rng.choice(['zzz', 'stream', 'n', 'seed', 'top_p', 'rid', 'args'])] = random_value(rng)
        elif op == 3 and keys:
            target[rng.choice(keys)] = [random_value(rng)]
        else:
            return json.dumps(b)[:rng.randrange(1, 60)]  # truncated text
    # keep generations short so the run stays fast
    for k, cap in LIMITS.items():
        for t in (b, b.get('sampling_params') if isinstance(b.get('sampling_params'), dict) else {}):
            if isinstance(t.get(k), (int, float)) and not isinstance(t.get(k), bool) and t[k] > cap:
                t[k] = cap
    if 'max_tokens' not in b and 'prompt' in b: b['max_tokens'] = 2
    return json.dumps(b)


def fuzz(url, seed, n):
    rng = random.Random(seed)
    s = requests.Session()
    seen = {}
    for i in range(n):
        route = rng.choice(sorted(VALID))
        body = mutate(rng, VALID[route]) if i % 10 else json.dumps(VALID[route])
        r = s.post(url + route, data=body.encode(), timeout=60)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code in (200, 400, 404, 413), (route, body, r.status_code, r.text[:300])
        if r.headers.get('Content-Type', '').startswith('text/event-stream'):
            assert r.text.rstrip().endswith('[DONE]') or 'message_stop' in r.text, (route, body, r.text[-200:])
        else:
            j = r.json()
            if r.status_code != 200:
                assert 'error' in j, (route, body, j)
    assert requests.get(url + '/health').status_code == 200
    assert seen.get(200, 0) > 0 and seen.get(400, 0) > 0, seen
    print('fuzz seed %d: %d bodies, statuses %s' % (seed, n, seen))


def sigterm_with_stream(srv):
    # A program that would run forever: aborted after --shutdown-timeout.
    src = ('fn g(s) { s += "once" + gen("a", max_tokens=100, ignore_eos=true) }\n'
           'main { while true { let st = g()\n print(st["a"]) } }\n')
    endless = open_stream(srv.url, '/v1/programs/run', {'source': src, 'stream': True})
    sock = socket.create_connection(('127.0.0.1', srv.port))
    body = json.dumps({'prompt': 'go', 'max_tokens': 200, 'stream': True, 'ignore_eos': True})
    sock.sendall(('POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s'
                  % (len(body), body)).encode())
    got = sock.recv(4096)
    assert b'200' in got, got
    rc, secs = srv.stop()
    rest = b''
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    assert rc == 0, (rc, ''.join(srv.log_lines))
    assert secs < 10, secs
    endless.close()
    assert b'[DONE]' in got + rest, (got + rest)[-300:]


def flush_cache(url):
    s = requests.Session()
    body = {'text': 'The quick brown fox jumps over the lazy dog, again and again.',
            'sampling_params': {'max_new_tokens': 4, 'temperature': 0}}
    first = s.post(url + '/generate', json=body).json()
    again = s.post(url + '/generate', json=body).json()
    assert again['meta_info']['cached_tokens'] == again['meta_info']['prompt_tokens'] - 1, again
    assert metric(s.get(url + '/metrics').text, 'sglc_cache_tokens') >= again['meta_info']['prompt_tokens']
    r = s.post(url + '/flush_cache')
    assert r.status_code == 200 and r.text.startswith('Cache flushed.'), (r.status_code, r.text)
    m = s.get(url + '/metrics').text
    assert metric(m, 'sglc_cache_tokens') == 0 and metric(m, 'sglc_kv_pool_used_slots') == 0, m
    after = s.post(url + '/generate', json=body).json()
    assert after['meta_info']['cached_tokens'] == 0 and after['text'] == first['text'], (after, first)
    assert s.get(url + '/flush_cache').status_code == 200  # SGLang accepts GET too
    # While a request runs the flush is refused (400, nothing evicted). The
    # program loops over 100-token generations: a flush can only succeed in
    # the instants between two of them, so one of a few tries is refused.
    before = metric(s.get(url + '/metrics').text, 'sglc_cancelled_disconnect_total')
    src = ('fn g(s) { s += "once" + gen("a", max_tokens=100, ignore_eos=true) }\n'
           'main { while true { let st = g()\n print(st["a"]) } }\n')
    sock = open_stream(url, '/v1/programs/run', {'source': src, 'stream': True})
    for _ in range(5):
        r = s.post(url + '/flush_cache')
        if r.status_code != 200:
            break
    sock.close()
    expect_error(r, 400, None, ['cache not flushed', 'running'])
    wait_cancelled(url, before, '/v1/programs/run')
    assert s.post(url + '/flush_cache').status_code == 200


def main():
    sglc, model = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    with Server(sglc, model, '--max-body', '65536', '--shutdown-timeout', '2') as srv:
        bad_inputs(srv.url)
        constraints(srv.url)
        disconnect(srv.url)
        concurrent_programs(srv.url)
        flush_cache(srv.url)
        fuzz(srv.url, seed, int(sys.argv[4]) if len(sys.argv) > 4 else 300)
        log = ''.join(srv.log_lines)
        assert 'POST /generate 400' in log and 'ms=' in log, log[-500:]
        sigterm_with_stream(srv)
    api_key(sglc, model)
    print('server unit: ok')


if __name__ == '__main__':
    main()
