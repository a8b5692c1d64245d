#!/usr/bin/env python3
# e2e_example.py: runs one examples/*.sgl program on the real model with
# `sglc run --json` and checks its shape: status ok, the variables and
# output lines each example promises. Model text itself is not compared
# (it depends on the model), only its structure.
# usage: e2e_example.py SGLC EXAMPLE.sgl
# Skips (77) when $SGL_TEST_MODEL is missing, unless CI=true.
import json
import os
import re
import subprocess
import sys


def fail(msg):
    print('FAIL: ' + msg)
    sys.exit(1)


def check(name, res, out_lines):
    v = res['variables']
    if name == 'quickstart':
        assert 'answer' in v and v['answer'].strip(), v
        assert out_lines[0].startswith('Q: ') and out_lines[1].startswith('A:'), out_lines
    elif name == 'chain_of_thought':
        assert 'reasoning' in v and 'answer' in v, v
    elif name == 'few_shot_classify':
        assert len(out_lines) == 4, out_lines
        for line in out_lines:
            assert re.search(r'-> (positive|negative)$', line), line
    elif name == 'skeleton_of_thought':
        assert isinstance(v['detail'], list) and len(v['detail']) == 3, v
        assert 'summary' in v, v
    elif name == 'tree_of_thought':
        assert len(v['idea']) == 3 and all(r in (' yes', ' no') for r in v['rating']), v
        assert 'plan' in v, v
    elif name == 'branch_solve_merge':
        assert [s in (' 1', ' 2', ' 3', ' 4', ' 5') for s in v['score']] == [True] * 3, v
        assert v['verdict'] in (' yes', ' no'), v
    elif name == 'multi_turn_chat':
        assert all(k in v for k in ('a1', 'a2', 'a3')), v
    elif name == 'react_agent':
        assert 'thought' in v and 'action' in v, v
        assert any(line.startswith('answer: ') for line in out_lines), out_lines
    elif name == 'self_consistency':
        assert isinstance(v['sample'], list) and len(v['sample']) == 5, v
        assert out_lines[-1].startswith('majority: '), out_lines
        assert out_lines[-1][len('majority: '):].strip() in [x.strip() for x in v['sample']], out_lines
    elif name == 'select_methods':
        assert len(out_lines) == 3, out_lines
        for line, method in zip(out_lines, ('token_length_normalized', 'greedy_token_selection',
                                            'unconditional_likelihood_normalized')):
            head, scores = line.split(' [', 1)
            assert head.split(':')[0] == method, line
            assert head.split(':', 1)[1] in (' Paris', ' London', ' a big city'), line
            assert len(json.loads('[' + scores)) == 3, line
        # Greedy and length-normalised agree on a one-token winner here.
        assert out_lines[0].split(':')[1].split(' [')[0] == ' Paris', out_lines
    else:
        fail('no checks for example ' + name)


def main():
    sglc, example = sys.argv[1], sys.argv[2]
    model = os.environ.get('SGL_TEST_MODEL', '')
    if not os.path.exists(model):
        if os.environ.get('CI') == 'true':
            fail('model missing: ' + model)
        print('SKIP: model missing: ' + model)
        sys.exit(77)
    name = os.path.basename(example)[:-len('.sgl')]
    p = subprocess.run([sglc, 'run', example, '--json', '--model', model, '--threads', '1'],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        fail('exit %d\nstdout: %s\nstderr: %s' % (p.returncode, p.stdout, p.stderr))
    res = json.loads(p.stdout)
    if res['status'] != 'ok':
        fail('status %s: %s' % (res['status'], res['error']))
    out_lines = [l for l in res['output'].split('\n') if l]
    try:
        check(name, res, out_lines)
    except (AssertionError, KeyError, TypeError) as e:
        fail('%s: unexpected result: %r\n%s' % (name, e, json.dumps(res, indent=1)))
    print('%s: ok (%.2f s, %d requests, %d cached tokens)' % (name, res['seconds'], res['requests'],
                                                              res['cached_tokens']))


if __name__ == '__main__':
    main()
