#!/usr/bin/env python3
# constrain_test.py: constrained decoding through the sglc executable.
#
#   unit  (fake engine and the tiny model; no real model needed)
#     - `sglc run --fake` of constrain/structured.sgl: every variable matches
#       its constraint (the fake follows the mask, so this checks the
#       language -> VM -> request path for regex, json_schema, grammar, dtype);
#     - bad literal constraints (tests/lang/cases/constrain: regex syntax,
#       unsupported schema keyword, grammar syntax, state budget) make both
#       `sglc check` and `sglc run` exit non-zero with file:line:col errors;
#       a bad constraint built at run time is refused with the compiler's
#       message;
#     - `sglc generate` on the tiny model with --regex / --json-schema (@FILE)
#       / --grammar / --choice, jump-forward on and off: valid outputs,
#       --stats counts forced tokens; bad constraints exit non-zero.
#   e2e   (the default model, $SGL_TEST_MODEL)
#     - `sglc run --json --stats` of structured.sgl with jump-forward on and
#       off (--no-jump-forward): every output valid, forced tokens reported
#       (> 0 on, 0 off);
#     - determinism: greedy JSON-schema outputs of four prompts through
#       `sglc generate` are identical batched, one prompt at a time, with
#       chunked prefill (8 tokens) and with the cache off.
# Validation uses Python's re, json and the jsonschema package.
# usage: constrain_test.py SGLC unit|e2e [TINY_MODEL]
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, 'constrain')
LANG_CASES = os.path.join(HERE, '..', 'lang', 'cases', 'constrain')

PERSON = {
    'type': 'object',
    'properties': {
        'name': {'type': 'string', 'maxLength': 24},
        'age': {'type': 'integer', 'minimum': 0, 'maximum': 120},
        'city': {'enum': ['Paris', 'London', 'Tokyo', 'New York']},
        'hobbies': {'type': 'array', 'items': {'type': 'string', 'maxLength': 16},
                    'minItems': 2, 'maxItems': 2},
    },
    'required': ['name', 'age', 'city', 'hobbies'],
    'additionalProperties': False,
}
DATE = r'(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])'

fails = []


def expect(cond, what):
    if not cond:
        fails.append(what)
        print('FAIL: ' + what)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop('timeout', 300),
                          env=dict(os.environ, NO_COLOR='1'), **kw)


class _End(Exception):
    pass


def valid_expr(t, prefix=False):
    """root ::= expr; expr ::= term (" + " term)*; term ::= [1-9] | "(" expr ")".
    With prefix, also true when t is the start of such a text (cut by length)."""
    pos = 0

    def peek(s):
        if prefix and len(t) - pos < len(s) and s.startswith(t[pos:]):
            raise _End()
        return t.startswith(s, pos)

    def term():
        nonlocal pos
        if prefix and pos == len(t):
            raise _End()
        if pos < len(t) and t[pos] in '123456789':
            pos += 1
            return True
        if pos < len(t) and t[pos] == '(':
            pos += 1
            if not expr() or not peek(')'):
                return False
            pos += 1
            return True
        return False

    def expr():
        nonlocal pos
        if not term():
            return False
        while peek(' + '):
            pos += 3
            if not term():
                return False
        return True

    try:
        return expr() and (pos == len(t) or (prefix and peek(' + ')))
    except _End:
        return True


def check_json(text, schema, what):
    import jsonschema
    try:
        jsonschema.validate(json.loads(text), schema)
    except Exception as e:  # noqa: BLE001 - any failure is a test failure
        expect(False, '%s: %r is not valid: %s' % (what, text, str(e).splitlines()[0]))


def check_structured(res, what):
    expect(res.get('error') in (None, ''), '%s: run failed: %s' % (what, res.get('error')))
    v = res.get('variables', {})
    check_json(v.get('person', ''), PERSON, what + ' person')
    expect(re.fullmatch(DATE, v.get('date', '')) is not None, '%s: date %r' % (what, v.get('date')))
    out = res.get('output', '').splitlines()
    cut = bool(out) and out[-1] == 'expr finish: length'
    m = re.search(r'person tokens: (\d+) \((\d+) forced\)', res.get('output', ''))
    expect(m is not None and int(m.group(2)) <= int(m.group(1)), '%s: person meta %r' % (what, m and m.group(0)))
    res['person_forced'] = int(m.group(2)) if m else -1
    expect(valid_expr(v.get('expr', ''), prefix=cut), '%s: expr %r' % (what, v.get('expr')))
    expect(isinstance(v.get('legs'), int), '%s: legs %r' % (what, v.get('legs')))
    expect(isinstance(v.get('pi'), (int, float)), '%s: pi %r' % (what, v.get('pi')))
    expect(isinstance(v.get('sky'), bool), '%s: sky %r' % (what, v.get('sky')))
    expect(v.get('colour') in ('red', 'green', 'blue'), '%s: colour %r' % (what, v.get('colour')))
    print('%s: %s' % (what, json.dumps({k: v.get(k) for k in
                                        ('person', 'date', 'expr', 'legs', 'pi', 'sky', 'colour')})))


def forced_of(stderr):
    m = re.search(r'(\d+) sampled, (\d+) forced', stderr)
    return (int(m.group(1)), int(m.group(2))) if m else None


def unit(sglc, tiny):
    prog = os.path.join(CASES, 'structured.sgl')
    p = run([sglc, 'run', '--fake', '--json', prog])
    expect(p.returncode == 0, 'fake run: exit %d: %s' % (p.returncode, p.stderr))
    if p.returncode == 0:
        check_structured(json.loads(p.stdout), 'fake')

    for name in ('regex', 'schema', 'grammar', 'budget'):
        path = os.path.join(LANG_CASES, name + '.sgl')
        for cmd in ([sglc, 'check', path], [sglc, 'run', '--fake', path]):
            p = run(cmd)
            located = re.search(r'%s\.sgl:\d+:\d+: error: invalid ' % name, p.stderr)
            expect(p.returncode != 0 and located, '%s %s: exit %d, stderr %r' %
                   (cmd[1], name, p.returncode, p.stderr))
    p = run([sglc, 'run', '--fake', os.path.join(CASES, 'bad_dynamic.sgl')])
    expect(p.returncode == 1 and 'regex:' in p.stderr and 'bad_dynamic.sgl:2:' in p.stderr,
           'dynamic bad regex: exit %d, stderr %r' % (p.returncode, p.stderr))

    if not tiny:
        return
    gen = [sglc, 'generate', '--model', tiny, '--threads', '1', '--prompt', 'Record:', '--stats']
    with tempfile.TemporaryDirectory() as tmp:
        schema_file = os.path.join(tmp, 'schema.json')
        with open(schema_file, 'w') as f:
            json.dump(PERSON, f)
        kinds = [
            ('regex', ['--regex', DATE, '--max-tokens', '24'], lambda t: re.fullmatch(DATE, t)),
            ('json', ['--json-schema', '@' + schema_file, '--max-tokens', '160'],
             lambda t: check_json(t, PERSON, 'generate json') or True),
            ('grammar', ['--grammar', 'root ::= expr\nexpr ::= term (" + " term)*\n'
                         'term ::= [1-9] | "(" expr ")"\n', '--max-tokens', '12'], None),
            ('choices', ['--choice', 'yes', '--choice', 'no', '--choice', 'not sure'],
             lambda t: t in ('yes', 'no', 'not sure')),
        ]
        for kind, args, ok in kinds:
            for jf in (True, False):
                p = run(gen + args + ([] if jf else ['--no-jump-forward']))
                text = p.stdout[:-1] if p.stdout.endswith('\n') else p.stdout
                finish = re.search(r'finish (\w+)', p.stderr)
                what = 'generate %s (jump-forward %s)' % (kind, 'on' if jf else 'off')
                expect(p.returncode == 0, '%s: exit %d: %s' % (what, p.returncode, p.stderr))
                counts = forced_of(p.stderr)
                expect(counts is not None, '%s: --stats lacks forced tokens' % what)
                if counts and not jf:
                    expect(counts[1] == 0, '%s: %d forced' % (what, counts[1]))
                if finish and finish.group(1) == 'stop':
                    good = ok(text) if ok else valid_expr(text)
                    expect(bool(good), '%s: %r does not match' % (what, text))
                print('%s: %r (%s), sampled/forced %s' % (what, text, finish and finish.group(1), counts))
        for args, want in ((['--regex', 'ab(c'], 'regex:'),
                           (['--json-schema', '{"type": "string", "format": "hostname-x"}'], 'json_schema:'),
                           (['--grammar', 'root ::= "a" )\n'], 'grammar:'),
                           (['--regex', 'a', '--grammar', 'root ::= "a"'], 'one of')):
            p = run(gen + args)
            expect(p.returncode != 0 and want in p.stderr, 'generate %s: exit %d, stderr %r' %
                   (args, p.returncode, p.stderr))


def e2e(sglc):
    model = os.environ.get('SGL_TEST_MODEL', '')
    if not os.path.exists(model):
        if os.environ.get('CI') == 'true':
            expect(False, 'no model at %r' % model)
            return
        print('skip: no model')
        sys.exit(77)
    prog = os.path.join(CASES, 'structured.sgl')
    for jf in (True, False):
        what = 'model, jump-forward %s' % ('on' if jf else 'off')
        p = run([sglc, 'run', '--json', '--stats', '--model', model, prog] +
                ([] if jf else ['--no-jump-forward']), timeout=600)
        expect(p.returncode == 0, '%s: exit %d: %s' % (what, p.returncode, p.stderr[-2000:]))
        if p.returncode != 0:
            continue
        res = json.loads(p.stdout)
        check_structured(res, what)
        expect((res['person_forced'] > 0) == jf, '%s: person forced %d' % (what, res['person_forced']))
        counts = forced_of(p.stderr)
        expect(counts is not None, '%s: --stats lacks forced tokens: %r' % (what, p.stderr))
        if counts:
            print('%s: %d sampled, %d forced' % (what, counts[0], counts[1]))
            expect((counts[1] > 0) == jf, '%s: %d forced' % (what, counts[1]))

    prompts = ['Describe a person called Ann as JSON.', 'Describe a person from Tokyo as JSON.',
               'Describe an old person as JSON.', 'Describe a person who likes chess as JSON.']
    base = [sglc, 'generate', '--model', model, '--chat', '--max-tokens', '64',
            '--json-schema', json.dumps(PERSON)]

    def outputs(extra, one_by_one=False):
        if one_by_one:
            res = []
            for q in prompts:
                p = run(base + extra + ['--prompt', q], timeout=600)
                expect(p.returncode == 0, 'generate alone: %s' % p.stderr[-500:])
                res.append(p.stdout.rstrip('\n'))
            return res
        args = []
        for q in prompts:
            args += ['--prompt', q]
        p = run(base + extra + args, timeout=600)
        expect(p.returncode == 0, 'generate %s: %s' % (extra, p.stderr[-500:]))
        return [b.split('\n', 1)[1].rstrip('\n') if '\n' in b else ''
                for b in p.stdout.split('### prompt ')[1:]]

    ref = outputs([], one_by_one=True)
    for t in ref:
        check_json(t, PERSON, 'generate alone')
    print('alone: %r' % ref)
    for extra in ([], ['--chunked-prefill', '8'], ['--no-cache'], ['--no-jump-forward', '--no-cache']):
        got = outputs(extra)
        if '--no-jump-forward' in extra:
            for t in got:  # valid, not necessarily the same tokens as with jump-forward
                check_json(t, PERSON, 'generate batched without jump-forward')
            continue
        expect(got == ref, 'batched %s differs from alone: %r vs %r' % (extra, got, ref))


def main():
    sglc, mode = sys.argv[1], sys.argv[2]
    if mode == 'unit':
        unit(sglc, sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        e2e(sglc)
    print('constrain %s: %d failures' % (mode, len(fails)))
    sys.exit(1 if fails else 0)


if __name__ == '__main__':
    main()
