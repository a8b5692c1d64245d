#!/usr/bin/env python3
# server_e2e.py: `sglc serve` on the default model, called by real clients.
#  - the openai package: completions, chat, streaming (deltas add up to the
#    unstreamed reply at temperature 0), logprobs, n, stop, include_usage,
#    usage.prompt_tokens_details.cached_tokens rising on a repeated prefix;
#  - requests on /generate: greedy output equal to `sglc generate` for the
#    same prompts, alone and under 32 concurrent requests; the request shapes
#    SGLang's RuntimeEndpoint sends (prefix caching with max_new_tokens 0,
#    select as a batch with prompt logprobs, streaming with cumulative text);
#  - /v1/messages (Anthropic) streamed and not;
#  - /v1/programs/run equal to `sglc run --json` (one instance, a program
#    with select over run_batch, and a batch of argument sets);
#  - a client leaving a long /generate stream cancels its engine request.
# usage: server_e2e.py SGLC EXAMPLES_DIR
# Skips (77) when $SGL_TEST_MODEL or the clients are missing, unless CI=true.
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from srvutil import Server, metric  # noqa: E402
from server_unit import open_stream, wait_cancelled  # noqa: E402

try:
    import openai
    import requests
except ImportError:
    if os.environ.get('CI') == 'true':
        print('FAIL: the openai / requests packages are missing from %s (run scripts/setup)' % sys.executable)
        sys.exit(1)
    print('SKIP: the openai / requests packages are missing (run scripts/setup)')
    sys.exit(77)

PROMPTS = ['The capital of France is', 'List three colors:', 'def fib(n):', 'Once upon a time',
           'The sum of 2 and 3 is', 'Water boils at']
MAX_NEW = 12


def sglc_generate(sglc, model, prompts):
    args = [sglc, 'generate', '--model', model, '--threads', '2', '--max-tokens', str(MAX_NEW)]
    for p in prompts:
        args += ['--prompt', p]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, check=True).stdout
    parts = out.split('### prompt ')[1:]
    texts = {}
    for part in parts:
        num, text = part.split('\n', 1)
        texts[prompts[int(num) - 1]] = text[:-1]  # the newline after each output
    assert len(texts) == len(prompts), out
    return texts


def gen(url, prompt):
    r = requests.post(url + '/generate', json={
        'text': prompt, 'sampling_params': {'max_new_tokens': MAX_NEW, 'temperature': 0}}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()['text']


def check_openai(url):
    c = openai.OpenAI(base_url=url + '/v1', api_key='none')
    models = c.models.list()
    model = models.data[0].id
    r = c.completions.create(model=model, prompt='The capital of France is', max_tokens=8, temperature=0)
    assert r.choices[0].text.strip() and r.usage.completion_tokens <= 8, r
    assert r.choices[0].finish_reason in ('stop', 'length'), r
    # n and stop
    r = c.completions.create(model=model, prompt='Count: 1, 2, 3,', max_tokens=10, temperature=0.8, n=3, seed=7,
                             stop=[','])
    assert len(r.choices) == 3 and all(',' not in ch.text for ch in r.choices), r
    # logprobs (completions form)
    r = c.completions.create(model=model, prompt='Hello', max_tokens=4, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == r.usage.completion_tokens, lp
    assert all(len(t) <= 3 for t in lp.top_logprobs) and all(v <= 0 for v in lp.token_logprobs), lp
    # chat, streamed and not, equal at temperature 0
    msgs = [{'role': 'user', 'content': 'Name a fruit.'}]
    full = c.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0)
    text = full.choices[0].message.content
    assert text and full.choices[0].message.role == 'assistant', full
    chunks = list(c.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0,
                                            stream=True, stream_options={'include_usage': True}))
    streamed = ''.join(ch.choices[0].delta.content or '' for ch in chunks if ch.choices)
    assert streamed == text, (streamed, text)
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens == full.usage.completion_tokens, chunks[-1]
    assert any(ch.choices and ch.choices[0].finish_reason for ch in chunks), chunks
    # chat logprobs
    r = c.chat.completions.create(model=model, messages=msgs, max_tokens=5, temperature=0, logprobs=True,
                                  top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in content), r
    assert abs(content[0].top_logprobs[0].logprob - content[0].logprob) < 1e-4, content[0]
    # cached_tokens rises on a repeated long prefix
    prefix = 'You are a careful assistant. ' * 20
    first = c.chat.completions.create(model=model, max_tokens=2, temperature=0,
                                      messages=[{'role': 'system', 'content': prefix},
                                                {'role': 'user', 'content': 'Question one?'}])
    second = c.chat.completions.create(model=model, max_tokens=2, temperature=0,
                                       messages=[{'role': 'system', 'content': prefix},
                                                 {'role': 'user', 'content': 'Question two?'}])
    c1 = first.usage.prompt_tokens_details.cached_tokens
    c2 = second.usage.prompt_tokens_details.cached_tokens
    assert c2 > c1 and c2 >= 100, (c1, c2)
    # response_format: the reply is JSON of the schema; a bad schema is a 400
    schema = {'type': 'object', 'properties': {'city': {'type': 'string', 'maxLength': 20}},
              'required': ['city'], 'additionalProperties': False}
    reply = c.chat.completions.create(
        model=model, messages=msgs, max_tokens=32, temperature=0,
        response_format={'type': 'json_schema', 'json_schema': {'name': 'city', 'schema': schema}})
    got = json.loads(reply.choices[0].message.content)
    assert list(got) == ['city'] and isinstance(got['city'], str), got
    try:
        c.chat.completions.create(model=model, messages=msgs, max_tokens=4, response_format={
            'type': 'json_schema', 'json_schema': {'name': 'x', 'schema': {'type': 'string', 'format': 'nope'}}})
        raise AssertionError('a schema with an unknown format was accepted')
    except openai.BadRequestError as e:
        assert 'format' in str(e), e
    print('openai client: ok (cached_tokens %d -> %d)' % (c1, c2))


def check_generate(url, sglc, model):
    ref = sglc_generate(sglc, model, PROMPTS)
    for p in PROMPTS:
        got = gen(url, p)
        assert got == ref[p], (p, got, ref[p])
    jobs = [PROMPTS[i % len(PROMPTS)] for i in range(32)]
    with concurrent.futures.ThreadPoolExecutor(32) as ex:
        outs = list(ex.map(lambda p: gen(url, p), jobs))
    for p, got in zip(jobs, outs):
        assert got == ref[p], ('under 32 concurrent requests', p, got, ref[p])
    print('/generate greedy == sglc generate: ok (alone and 32 concurrent)')


def check_runtime_endpoint_shapes(url):
    s = requests.Session()
    info = s.get(url + '/get_model_info').json()
    assert info['model_path'] and info['is_generation'], info
    assert s.get(url + '/get_server_info').json()['context_length'] > 0
    assert s.get(url + '/health_generate').status_code == 200
    # cache_prefix / commit_lazy_operations
    text = 'Question: is the sky blue?\nAnswer:'
    r = s.post(url + '/generate', json={'text': text, 'sampling_params': {'max_new_tokens': 0}}).json()
    prompt_len = r['meta_info']['prompt_tokens']
    assert r['text'] == '' and prompt_len > 5, r
    # select: a batch of prompt + choice with prompt logprobs
    choices = [' yes', ' no', ' banana']
    r = s.post(url + '/generate', json={
        'text': [text + c for c in choices], 'sampling_params': {'max_new_tokens': 0, 'temperature': 0},
        'return_logprob': True, 'return_text_in_logprobs': True,
        'logprob_start_len': max(prompt_len - 2, 0)}).json()
    assert isinstance(r, list) and len(r) == 3, r
    norm = []
    for item in r:
        lps = item['meta_info']['input_token_logprobs']
        assert lps and all(len(e) == 3 for e in lps) and isinstance(lps[0][2], str), lps
        vals = [e[0] for e in lps if e[0]]
        norm.append(sum(vals) / len(vals))
        assert item['meta_info']['output_token_logprobs'] == [], item
    assert norm.index(max(norm)) != 2, norm  # ' banana' is not the best answer
    # gen: the sampling params SglSamplingParams.to_srt_kwargs() sends, defaults included
    srt = {'skip_special_tokens': True, 'spaces_between_special_tokens': True, 'max_new_tokens': 8,
           'min_new_tokens': 0, 'n': 1, 'stop': [], 'stop_token_ids': None, 'stop_regex': None, 'temperature': 0,
           'top_p': 1.0, 'top_k': -1, 'min_p': 0.0, 'frequency_penalty': 0.0, 'presence_penalty': 0.0,
           'ignore_eos': False, 'regex': None, 'json_schema': None}
    r = s.post(url + '/generate', json={'text': 'Once upon a time', 'sampling_params': srt})
    assert r.status_code == 200 and r.json()['text'] == gen(url, 'Once upon a time')[:len(r.json()['text'])], r.text
    # streaming: cumulative text, ends with [DONE]
    body = {'text': 'Once upon a time', 'sampling_params': srt, 'stream': True}
    seen, last = [], None
    with s.post(url + '/generate', json=body, stream=True) as resp:
        for line in resp.iter_lines():
            if not line.startswith(b'data:'):
                continue
            if line == b'data: [DONE]':
                last = 'done'
                break
            seen.append(json.loads(line[5:])['text'])
    assert last == 'done' and all(seen[i + 1].startswith(seen[i]) for i in range(len(seen) - 1)), seen
    assert seen[-1] == gen(url, 'Once upon a time')[:len(seen[-1])], seen
    print('RuntimeEndpoint request shapes: ok (select scores %s)' % ['%.2f' % v for v in norm])


def check_messages(url):
    body = {'model': 'm', 'max_tokens': 12, 'temperature': 0, 'system': 'Be brief.',
            'messages': [{'role': 'user', 'content': 'Name a color.'}]}
    r = requests.post(url + '/v1/messages', json=body).json()
    assert r['type'] == 'message' and r['content'][0]['type'] == 'text', r
    events, text = [], ''
    with requests.post(url + '/v1/messages', json=dict(body, stream=True), stream=True) as resp:
        for line in resp.iter_lines():
            if line.startswith(b'event: '):
                events.append(line[7:].decode())
            elif line.startswith(b'data: '):
                d = json.loads(line[6:])
                if d['type'] == 'content_block_delta':
                    text += d['delta']['text']
    assert events[0] == 'message_start' and events[-1] == 'message_stop' and 'message_delta' in events, events
    assert text == r['content'][0]['text'], (text, r)
    print('/v1/messages: ok')


def sglc_run_json(sglc, model, *args):
    out = subprocess.run([sglc, 'run', '--model', model, '--threads', '2', '--json'] + list(args),
                         capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout)


def same_run(a, b):
    for k in ('status', 'result', 'variables', 'output', 'error'):
        assert a[k] == b[k], (k, a[k], b[k])


def check_programs(url, sglc, model, examples):
    for name in ('quickstart.sgl', 'few_shot_classify.sgl'):
        path = os.path.join(examples, name)
        ref = sglc_run_json(sglc, model, path, '--temperature', '0')
        got = requests.post(url + '/v1/programs/run', json={
            'source': open(path).read(), 'temperature': 0}).json()
        same_run(got, ref)
        by_file = requests.post(url + '/v1/programs/run', json={'file': name, 'temperature': 0}).json()
        same_run(by_file, ref)
    src = 'fn f(s, topic) {\n  s += "A short poem about " + topic + ":\\n"\n  s += gen("poem", max_tokens=10)\n}\n'
    with tempfile.NamedTemporaryFile('w', suffix='.sgl', prefix='sglc_server_e2e_', delete=False) as f:
        f.write(src)
        tmp = f.name
    topics = ['rain', 'stones', 'bread']
    got = requests.post(url + '/v1/programs/run', json={
        'source': src, 'function': 'f', 'batch': [[t] for t in topics], 'temperature': 0}).json()
    for t, inst in zip(topics, got['results']):
        same_run(inst, sglc_run_json(sglc, model, tmp, '--fn', 'f', t, '--temperature', '0'))
    # streamed: the printed output arrives as events, then the result
    events = []
    with requests.post(url + '/v1/programs/run', stream=True, json={
            'source': open(os.path.join(examples, 'quickstart.sgl')).read(), 'temperature': 0,
            'stream': True}) as resp:
        for line in resp.iter_lines():
            if line.startswith(b'data: {'):
                events.append(json.loads(line[6:]))
    out = ''.join(e['output'] for e in events if 'output' in e)
    res = [e['result'] for e in events if 'result' in e]
    assert len(res) == 1 and res[0]['output'] == out, (out, res)
    os.unlink(tmp)
    print('/v1/programs/run == sglc run --json: ok')


def check_disconnect(url):
    """A client leaves a long /generate stream: its engine request is cancelled."""
    m = requests.get(url + '/metrics').text
    before = metric(m, 'sglc_cancelled_disconnect_total')
    sock = open_stream(url, '/generate', {'text': 'Tell me a long story.', 'stream': True,
                                          'sampling_params': {'max_new_tokens': 1500, 'ignore_eos': True}})
    assert metric(requests.get(url + '/metrics').text, 'sglc_num_running_reqs') >= 1
    sock.close()
    wait_cancelled(url, before, '/generate')
    print('disconnect mid-stream: cancelled')


def main():
    sglc, examples = sys.argv[1], sys.argv[2]
    model = os.environ.get('SGL_TEST_MODEL', '')
    if not os.path.exists(model):
        if os.environ.get('CI') == 'true':
            print('FAIL: no model at %r' % model)
            sys.exit(1)
        print('SKIP: no model at %r' % model)
        sys.exit(77)
    with Server(sglc, model, '--programs', examples) as srv:
        check_openai(srv.url)
        check_generate(srv.url, sglc, model)
        check_runtime_endpoint_shapes(srv.url)
        check_messages(srv.url)
        check_programs(srv.url, sglc, model, examples)
        check_disconnect(srv.url)
        rc, secs = srv.stop()
        assert rc == 0, (rc, ''.join(srv.log_lines[-20:]))
    print('server e2e: ok')


if __name__ == '__main__':
    main()
