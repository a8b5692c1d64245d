#!/usr/bin/env python3
# e2e_fewshot_cache.py: one `sglc run` of a program that runs a few-shot
# prompt (a system prompt and six worked examples, a few hundred tokens) for
# 200 questions with run_batch(parallel=32), each ending in a 2-token gen.
# The shared prefix must be served from the radix cache: summed over the 200
# instances (meta(s, "a") of each), cached tokens >= 0.9 * 199 * prefix
# tokens (the prefix is computed once, for the first instance or the prefix
# hint). The engine's own figures (--stats) must agree. Prints the figures.
# usage: e2e_fewshot_cache.py SGLC
# Skips (77) when $SGL_TEST_MODEL is missing, unless CI=true.
import json
import os
import re
import subprocess
import sys
import tempfile

N = 200

SYSTEM = ('You are a precise assistant for a quiz show. Every question has one short answer. '
          'Reply with a single word or a single number and nothing else: no explanation, no '
          'punctuation, no units unless they are asked for, and never a full sentence. When a '
          'question is about arithmetic, compute the result exactly. When it is about the world, '
          'give the most common answer.\n\n')

EXAMPLES = [
    ('The capital city of a country is where its government sits. What is the capital of France?', 'Paris'),
    ('Spiders belong to the arachnids, not the insects. How many legs does a spider have?', '8'),
    ('On a clear day without clouds, sunlight is scattered by the air. What color is the sky?', 'blue'),
    ('Add the two numbers and give only the total. What is 12 plus 30?', '42'),
    ('Farm animals make many different sounds. Which animal says moo?', 'cow'),
    ('Words can have opposites, called antonyms. What is the opposite of hot?', 'cold'),
]


def prefix_text():
    s = SYSTEM
    for q, a in EXAMPLES:
        s += 'Question: %s\nAnswer: %s\n\n' % (q, a)
    return s


def program():
    return '''const PREFIX = %s
fn answer(s, q) {
    s += PREFIX
    s += f"Question: {q}\\nAnswer:" + gen("a", max_tokens=2, temperature=0)
}
main {
    let args = []
    for i in range(%d) {
        args += [{"q": f"Add the two numbers and give only the total. What is {i} plus {i %% 7}?"}]
    }
    let rs = run_batch(answer, args, parallel=32)
    let per = []
    for r in rs {
        let m = meta(r, "a")
        per += [[m["prompt_tokens"], m["cached_tokens"], m["completion_tokens"]]]
    }
    print(json_dump({"instances": len(rs), "per": per, "first": rs[0]["a"]}))
}
''' % (json.dumps(prefix_text()), N)


def fail(msg):
    print('FAIL: ' + msg)
    sys.exit(1)


def main():
    sglc = sys.argv[1]
    model = os.environ.get('SGL_TEST_MODEL', '')
    if not os.path.exists(model):
        if os.environ.get('CI') == 'true':
            fail('model missing: ' + model)
        print('SKIP: model missing: ' + model)
        sys.exit(77)
    tok = subprocess.run([sglc, 'tokenize', '--model', model, '--json', '-'], input=prefix_text(),
                         capture_output=True, text=True, timeout=60)
    if tok.returncode != 0:
        fail('tokenize: ' + tok.stderr)
    prefix_len = json.loads(tok.stdout)['count']
    if prefix_len < 200:
        fail('the few-shot prefix is only %d tokens' % prefix_len)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'fewshot.sgl')
        with open(path, 'w') as f:
            f.write(program())
        p = subprocess.run([sglc, 'run', path, '--model', model, '--threads', '2', '--stats'],
                           capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        fail('exit %d\nstdout: %s\nstderr: %s' % (p.returncode, p.stdout, p.stderr))
    res = json.loads(p.stdout)
    per = res['per']
    if res['instances'] != N or len(per) != N:
        fail('expected %d instances: %r' % (N, res))
    prompt = sum(x[0] for x in per)
    cached = sum(x[1] for x in per)
    uncached = sum(1 for x in per if x[1] < prefix_len)
    need = 0.9 * (N - 1) * prefix_len
    m = re.search(r'prompt (\d+) tokens, (\d+) cached \(([\d.]+)%\), (\d+) generated', p.stderr)
    if not m:
        fail('no --stats line: ' + p.stderr)
    e_prompt, e_cached, e_rate, e_gen = int(m[1]), int(m[2]), float(m[3]), int(m[4])
    print('prefix %d tokens; %d instances: prompt %d tokens, cached %d (need >= %.0f = 0.9 x 199 x %d), '
          '%d instances below the prefix; engine: prompt %d, cached %d (%.1f%%), generated %d'
          % (prefix_len, N, prompt, cached, need, prefix_len, uncached, e_prompt, e_cached, e_rate, e_gen))
    if cached < need:
        fail('the shared prefix was not served from the cache')
    if any(x[0] < prefix_len or x[2] < 1 or x[2] > 2 for x in per):
        fail('an instance has an unexpected prompt or completion size: %r' % per)
    # The engine saw every instance's prompt (plus at most a prefix hint) and
    # cached at least what the instances report.
    if not (prompt <= e_prompt <= prompt + 2 * prefix_len) or e_cached < cached:
        fail('engine figures disagree with the instances\' meta')
    print('fewshot cache: ok')


if __name__ == '__main__':
    main()
