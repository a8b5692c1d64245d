#!/usr/bin/env python3
# check_corrupt.py: the CLI on a tiny model with one NaN weight
# (blk.1.ffn_down.weight): `model-info --verify` names the tensor and exits
# 1 (0 on the clean model); `generate` fails with the layer named instead of
# printing text.
# usage: check_corrupt.py SGLC CLEAN.gguf NAN.gguf
import subprocess
import sys

sglc, clean, nan = sys.argv[1:4]
fails = []


def run(*args):
    return subprocess.run([sglc] + list(args), capture_output=True, text=True, timeout=60)


p = run('model-info', '--verify', '--model', clean)
if p.returncode != 0 or 'all finite and in range' not in p.stdout:
    fails.append('verify clean: %d %s%s' % (p.returncode, p.stdout, p.stderr))
p = run('model-info', '--verify', '--model', nan)
if p.returncode != 1 or 'BAD      blk.1.ffn_down.weight (F16): 1 NaN' not in p.stdout:
    fails.append('verify nan: %d %s%s' % (p.returncode, p.stdout, p.stderr))
p = run('generate', '--model', nan, '--prompt', 'hello', '--max-tokens', '4')
if p.returncode == 0 or 'layer 1, feed-forward (blk.1.ffn_down)' not in p.stderr or p.stdout.strip():
    fails.append('generate nan: %d %r %r' % (p.returncode, p.stdout, p.stderr))
for f in fails:
    print('FAIL', f)
print('corrupt model: %d failed' % len(fails))
sys.exit(1 if fails else 0)
