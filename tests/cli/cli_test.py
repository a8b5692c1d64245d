"""cli_test.py: the command-line conventions every sglc subcommand shares
(docs/cli.md), checked on the fake engine, the tiny model or no model.

usage: cli_test.py SGLC TINY_MODEL [GROUP...]
Groups: after_file, double_dash, stdin, unknown_option, help, exit_codes,
json_errors, generate (default: all). Prints one line per check and
"cli: N passed, N failed"; exit status 1 if any check failed.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

SGLC = None
TINY = None
TMP = None
failures = []
passes = 0

PROG = '''fn echo(a, b) {
    return f"{a}|{b}"
}

fn boom(x) {
    return 1 / x
}

main {
    print("main ran")
}
'''

BAD = '''main {
    let y = no_such_name + 1
}
'''


def sglc(*args, stdin=None, env=None, timeout=60):
    """Runs sglc ARGS; returns (status, stdout, stderr). Never finds the real
    model: $SGL_MODEL points at a missing file unless env says otherwise."""
    e = dict(os.environ, NO_COLOR='1', SGL_MODEL=os.path.join(TMP, 'no-such-model.gguf'))
    e.pop('SGL_PATH', None)
    if env:
        e.update(env)
    p = subprocess.run([SGLC] + list(args), input=stdin, capture_output=True, text=True, env=e,
                       timeout=timeout, cwd=TMP)
    return p.returncode, p.stdout, p.stderr


def expect(cond, what, detail=''):
    global passes
    if cond:
        passes += 1
    else:
        failures.append(what)
        print('FAIL %s\n  %s' % (what, str(detail)[:2000]))


def commands():
    """The subcommands `sglc --help` lists."""
    rc, out, _ = sglc('--help')
    names = []
    on = False
    for line in out.splitlines():
        if line.startswith('commands:'):
            on = True
        elif on and line.startswith('  '):
            names.append(line.split()[0])
        elif on and not line.strip():
            break
    return names


def accepted_options(cmd):
    """What CMD's option table accepts (`--list-options`): [(name, takes_value)]."""
    rc, out, err = sglc(cmd, '--list-options')
    assert rc == 0, (cmd, rc, err)
    return [(l.split()[0], len(l.split()) > 1) for l in out.splitlines() if l.strip()]


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, 'w') as f:
        f.write(text)
    return path


# ---- the checks ----------------------------------------------------------

def test_after_file():
    """Options after FILE (and between program arguments) are options."""
    a = sglc('run', '--fake', 'prog.sgl')
    b = sglc('run', 'prog.sgl', '--fake')
    expect(a[0] == 0 and a == b and a[1] == 'main ran\n', 'after_file: run FILE --fake == run --fake FILE', (a, b))
    rc, out, err = sglc('run', 'prog.sgl', '--fn', 'echo', 'x', '--fake', 'y', '--json')
    doc = json.loads(out) if rc == 0 else {}
    expect(doc.get('result') == 'x|y', 'after_file: options between program arguments', (rc, out, err))
    rc, out, err = sglc('run', 'prog.sgl', '--fn', 'echo', '--bogus', '--fake')
    expect(rc == 2 and "unknown option '--bogus'" in err and 'main ran' not in out,
           'after_file: an unknown option after FILE is an error, not an argument', (rc, out, err))
    rc, out, err = sglc('check', 'bad.sgl', '--quiet')
    expect(rc == 1 and "undefined name 'no_such_name'" in err, 'after_file: check FILE --quiet', (rc, err))
    rc, out, err = sglc('dump', 'prog.sgl', '--ast')
    expect(rc == 0 and out.startswith('(module'), 'after_file: dump FILE --ast', (rc, err))
    rc, out, err = sglc('dump', 'prog.sgl', '--graph', '--format', 'json', '-O', '0', '--fn', 'echo')
    expect(rc == 0 and json.loads(out)['functions'][0]['name'] == 'echo', 'after_file: dump --graph options',
           (rc, err))
    # the value forms: --name=VALUE, -XVALUE, -X VALUE
    rc, out2, err = sglc('dump', '--graph', '--format=json', '-O0', '--fn=echo', 'prog.sgl')
    expect(rc == 0 and out2 == out, 'after_file: --name=VALUE and -XVALUE', (rc, err))
    rc, out, err = sglc('run', '-I.', '--fake', 'prog.sgl', '-I', '.', '--max-steps=1000')
    expect(rc == 0 and out == 'main ran\n', 'after_file: -IDIR, -I DIR, --max-steps=N', (rc, out, err))


def test_double_dash():
    """`--` ends the options: what follows is an operand even when it starts with '-'."""
    rc, out, err = sglc('run', 'prog.sgl', '--fake', '--fn', 'echo', '--', '--bogus', '-5')
    expect(rc == 0 and out == '--bogus|-5\n', 'double_dash: run program arguments after --', (rc, out, err))
    rc, out, err = sglc('run', '--fake', '--', 'prog.sgl')
    expect(rc == 0 and out == 'main ran\n', 'double_dash: FILE after --', (rc, out, err))
    rc, out, err = sglc('tokenize', '--model', TINY, '--json', '--', '-x')
    expect(rc == 0 and json.loads(out)['text'] == '-x', 'double_dash: tokenize -- -x', (rc, out, err))
    rc, out, err = sglc('generate', '--model', TINY, '--max-tokens', '2', '--', '-1 is')
    expect(rc == 0 and out.endswith('\n'), 'double_dash: generate -- PROMPT', (rc, out, err))
    rc, out, err = sglc('generate', '--model', TINY, '--max-tokens', '2', '--prompt', '-5 apples')
    expect(rc == 0, 'double_dash: an option value may start with -', (rc, err))


def test_stdin():
    """`-` reads standard input wherever a file or text is read."""
    rc, out, err = sglc('run', '--fake', '-', stdin=PROG)
    expect(rc == 0 and out == 'main ran\n', 'stdin: run -', (rc, out, err))
    rc, out, err = sglc('check', '-', stdin=BAD)
    expect(rc == 1 and "<stdin>:2:13: error: undefined name 'no_such_name'" in err, 'stdin: check -', (rc, err))
    rc, out, err = sglc('check', '-', stdin=PROG)
    expect(rc == 0, 'stdin: check - (clean)', (rc, err))
    rc, out, err = sglc('dump', '--ast', '-', stdin=PROG)
    expect(rc == 0 and '(fn echo' in out, 'stdin: dump --ast -', (rc, err))
    rc, out, err = sglc('generate', '--model', TINY, '--max-tokens', '2', '--prompts-file', '-',
                        stdin='one\n\ntwo\n')
    expect(rc == 0 and out.count('### prompt') == 2, 'stdin: generate --prompts-file -', (rc, out, err))
    rc, out, err = sglc('generate', '--model', TINY, '--max-tokens', '4', '--prompt', 'n', '--json-schema', '@-',
                        stdin='{"type": "integer"}')
    expect(rc == 0 and re.fullmatch(r'-?[0-9]+\n', out), 'stdin: generate --json-schema @-', (rc, out, err))
    rc, out, err = sglc('tokenize', '--model', TINY, '--json', '-', stdin='abc')
    expect(rc == 0 and json.loads(out)['text'] == 'abc', 'stdin: tokenize -', (rc, out, err))


def test_unknown_option():
    """Every command: an unknown option is an error with the usage line, exit 2."""
    for cmd in commands():
        rc, out, err = sglc(cmd, '--no-such-option')
        expect(rc == 2 and "sglc %s: error: unknown option '--no-such-option'" % cmd in err
               and ('usage: sglc %s' % cmd) in err, 'unknown_option: %s' % cmd, (rc, err))
        rc, out, err = sglc(cmd, '-Z')
        expect(rc == 2 and "unknown option '-Z'" in err, 'unknown_option: %s -Z' % cmd, (rc, err))
    rc, out, err = sglc('run', 'prog.sgl', '--fake=1')
    expect(rc == 2 and 'takes no value' in err, 'unknown_option: a value given to a flag', (rc, err))
    rc, out, err = sglc('run', 'prog.sgl', '--model')
    expect(rc == 2 and 'needs a value' in err, 'unknown_option: a missing value', (rc, err))


def test_help():
    """Every command: --help lists every option its parser accepts, and the
    parser accepts every option it lists (the table, not a hand list)."""
    cmds = commands()
    expect(len(cmds) >= 10, 'help: the command list', cmds)
    for cmd in cmds:
        rc, out, err = sglc(cmd, '--help')
        expect(rc == 0 and out.startswith('usage: sglc %s' % cmd), 'help: %s --help' % cmd, (rc, err))
        shown = set(re.findall(r'(?<![\w-])(--?[A-Za-z][\w-]*)', out))
        opts = accepted_options(cmd)
        expect(len(opts) >= 2, 'help: %s has an option table' % cmd, opts)
        for name, takes_value in opts:
            expect(name in shown, 'help: %s --help lists %s' % (cmd, name), out)
            # The parser takes it: no "unknown option" (a dummy value may be
            # rejected as a value; --help, reached next, then exits 0).
            args = [cmd, name] + (['0'] if takes_value else []) + ['--help']
            rc, o2, e2 = sglc(*args, timeout=30)
            expect('unknown option' not in e2, 'help: %s accepts %s' % (cmd, name), e2)


def test_exit_codes():
    """0 ok, 1 program or input error, 2 usage or setup error, alike everywhere."""
    expect(sglc('run', '--fake', 'prog.sgl')[0] == 0, 'exit_codes: run ok')
    expect(sglc('run', '--fake', 'bad.sgl')[0] == 1, 'exit_codes: run compile error -> 1')
    expect(sglc('run', '--fake', 'prog.sgl', '--fn', 'boom', '0')[0] == 1, 'exit_codes: run runtime error -> 1')
    expect(sglc('run', '--fake', 'missing.sgl')[0] == 1, 'exit_codes: run missing file -> 1')
    expect(sglc('check', 'bad.sgl')[0] == 1, 'exit_codes: check errors -> 1')
    expect(sglc('run')[0] == 2, 'exit_codes: run without FILE -> 2')
    expect(sglc('run', '--fake', 'prog.sgl', '--fn', 'nope')[0] == 2, 'exit_codes: run --fn unknown -> 2')
    expect(sglc('generate', '--model', TINY, '--prompts-file', 'missing.txt')[0] == 1,
           'exit_codes: generate unreadable prompts file -> 1')
    # A missing model: 2 in every command that needs one.
    for args in (['run', 'prog.sgl'], ['generate', '--prompt', 'x'], ['tokenize', 'x'], ['model-info'],
                 ['batch', 'progs'], ['serve', '--port', '0'], ['bench', '--quick', '--programs', '1']):
        rc, out, err = sglc(*args, stdin='')
        expect(rc == 2 and 'no-such-model.gguf' in err, 'exit_codes: missing model -> 2 (%s)' % args[0], (rc, err))
    rc, out, err = sglc('repl', stdin='')
    expect(rc == 2, 'exit_codes: missing model -> 2 (repl)', (rc, err))


ERROR_KEYS = ['col', 'file', 'kind', 'line', 'message']


def test_json_errors():
    """--json prints a JSON document on error too; batch rows share their keys."""
    rc, out, err = sglc('run', '--fake', 'bad.sgl', '--json')
    doc = json.loads(out)
    e = doc.get('error', {})
    expect(rc == 1 and list(doc) == ['error'] and sorted(e) == ERROR_KEYS and e['kind'] == 'compile'
           and (e['line'], e['col']) == (2, 13) and e['file'].endswith('bad.sgl'),
           'json_errors: run --json compile error', (rc, out))
    rc, out, err = sglc('run', 'prog.sgl', '--json', '--bogus')
    doc = json.loads(out)
    expect(rc == 2 and doc['error']['kind'] == 'usage' and 'unknown option' in doc['error']['message'],
           'json_errors: run --json usage error', (rc, out))
    rc, out, err = sglc('run', 'prog.sgl', '--json')
    doc = json.loads(out)
    expect(rc == 2 and doc['error']['kind'] == 'setup' and sorted(doc['error']) == ERROR_KEYS,
           'json_errors: run --json missing model', (rc, out))
    rc, out, err = sglc('run', '--fake', 'prog.sgl', '--json', '--fn', 'boom', '0')
    doc = json.loads(out)
    e = doc.get('error') or {}
    expect(rc == 1 and doc['status'] == 'error' and sorted(e) == ERROR_KEYS and e['kind'] == 'runtime'
           and e['line'] == 6 and 'division by zero' in e['message'], 'json_errors: run --json runtime error',
           (rc, out))
    rc, out, err = sglc('run', '--fake', 'prog.sgl', '--json')
    doc = json.loads(out)
    expect(rc == 0 and doc['status'] == 'ok' and doc['error'] is None and doc['output'] == 'main ran\n',
           'json_errors: run --json success', (rc, out))
    rc, out, err = sglc('batch', '--fake', 'progs')
    rows = [json.loads(l) for l in out.splitlines()]
    keys = [sorted(r) for r in rows]
    statuses = sorted(r['status'] for r in rows)
    expect(rc == 1 and len(rows) == 3 and all(k == keys[0] for k in keys)
           and statuses == ['compile_error', 'error', 'ok'],
           'json_errors: batch rows have the same keys', out)
    for r in rows:
        if r['status'] != 'ok':
            expect(sorted(r['error']) == ERROR_KEYS and r['error']['line'], 'json_errors: batch %s error object'
                   % r['status'], r)
    rc, out, err = sglc('check', 'bad.sgl', '--json')
    doc = json.loads(out)
    expect(rc == 1 and doc['ok'] is False and doc['diagnostics'][0]['line'] == 2
           and sorted(doc['error']) == ERROR_KEYS, 'json_errors: check --json', (rc, out))
    rc, out, err = sglc('check', 'prog.sgl', '--json')
    doc = json.loads(out)
    expect(rc == 0 and doc['ok'] is True and doc['error'] is None, 'json_errors: check --json clean', (rc, out))
    for args in (['tokenize', 'x', '--json'], ['model-info', '--json']):
        rc, out, err = sglc(*args)
        doc = json.loads(out) if out.strip() else {}
        expect(rc == 2 and doc.get('error', {}).get('kind') == 'setup', 'json_errors: %s --json missing model'
               % args[0], (rc, out, err))


def test_generate():
    """generate --ignore-eos, --logprobs N, --chat-template NAME on the tiny model."""
    base = ['generate', '--model', TINY, '--prompt', 'hi', '--temperature', '1.5', '--max-tokens', '200', '--stats']
    stopped = None
    for seed in range(1, 40):
        rc, out, err = sglc(*base, '--seed', str(seed))
        if 'finish stop (token' in err:
            stopped = seed
            break
    expect(stopped is not None, 'generate: some seed stops at the end-of-sequence token')
    if stopped is not None:
        rc, out, err = sglc(*base, '--seed', str(stopped), '--ignore-eos')
        expect(rc == 0 and 'completion tokens 200,' in err and 'finish length' in err,
               'generate: --ignore-eos runs to --max-tokens', err)
    rc, out, err = sglc('generate', '--model', TINY, '--prompt', 'hello', '--max-tokens', '3', '--logprobs', '2')
    lines = [l for l in out.splitlines() if l.startswith('logprob ')]
    ok = rc == 0 and len(lines) == 3
    for l in lines:
        m = re.match(r'logprob (\d+) ".*" (-?\d+\.\d+)  top: (.*)$', l)
        alts = re.findall(r'(\d+) "(?:[^"\\]|\\.)*" (-?\d+\.\d+)', m.group(3)) if m else []
        ok = ok and m is not None and float(m.group(2)) <= 0 and len(alts) == 2
    expect(ok, 'generate: --logprobs 2 prints one line per token with two alternatives', out)
    plain = sglc('generate', '--model', TINY, '--prompt', 'hi', '--max-tokens', '3', '--chat', '--stats')
    llama = sglc('generate', '--model', TINY, '--prompt', 'hi', '--max-tokens', '3', '--chat-template', 'llama-3',
                 '--stats')
    pt = lambda r: re.search(r'prompt tokens (\d+)', r[2])
    expect(plain[0] == 0 and llama[0] == 0 and pt(plain) and pt(llama) and pt(plain).group(1) != pt(llama).group(1),
           'generate: --chat-template NAME renders another template', (plain[2], llama[2]))
    rc, out, err = sglc('generate', '--model', TINY, '--prompt', 'hi', '--chat-template', 'nope')
    expect(rc == 2 and 'llama-3' in err, 'generate: an unknown --chat-template names the families', err)


GROUPS = {
    'after_file': test_after_file, 'double_dash': test_double_dash, 'stdin': test_stdin,
    'unknown_option': test_unknown_option, 'help': test_help, 'exit_codes': test_exit_codes,
    'json_errors': test_json_errors, 'generate': test_generate,
}


def main():
    global SGLC, TINY, TMP
    SGLC = os.path.abspath(sys.argv[1])
    TINY = os.path.abspath(sys.argv[2])
    groups = sys.argv[3:] or list(GROUPS)
    with tempfile.TemporaryDirectory() as tmp:
        TMP = tmp
        write('prog.sgl', PROG)
        write('bad.sgl', BAD)
        os.mkdir(os.path.join(tmp, 'progs'))
        write('progs/a_ok.sgl', 'main {\n    print("a")\n}\n')
        write('progs/b_boom.sgl', 'main {\n    let z = 0\n    print(1 / z)\n}\n')
        write('progs/c_bad.sgl', BAD)
        for g in groups:
            GROUPS[g]()
    print('cli: %d passed, %d failed' % (passes, len(failures)))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
