#!/usr/bin/env python3
"""check_device_flag.py: `sglc model-info` and `sglc generate` with --device.

--device cpu: model-info names the CPU; --device=cuda on a machine without a
GPU: one note line on stderr and the same greedy text as on the CPU (with a
GPU: the device named, and a non-empty continuation).
Usage: check_device_flag.py SGLC TINY_MODEL
"""
import subprocess
import sys

sglc, model = sys.argv[1:3]
fails = []


def run(*args):
    return subprocess.run([sglc, *args], capture_output=True, text=True, timeout=120)


r = run("model-info", "--model", model, "--device", "cpu")
if r.returncode != 0 or "device:          cpu (" not in r.stdout:
    fails.append("model-info --device cpu: rc %d, no 'device: cpu' line:\n%s%s" % (r.returncode, r.stdout, r.stderr))

gen = ["--model", model, "--prompt", "hello world", "--max-tokens", "12", "--temperature", "0"]
cpu = run("generate", *gen, "--device", "cpu")
cuda = run("generate", "--device=cuda", *gen)
if cpu.returncode != 0 or cuda.returncode != 0:
    fails.append("generate failed: %s / %s" % (cpu.stderr, cuda.stderr))
info = run("model-info", "--model", model, "--device=cuda")
if "device:          cuda (" in info.stdout:
    print("a GPU answers here: %s" % info.stdout.split("device:")[1].strip().splitlines()[0])
    if not cuda.stdout.strip():
        fails.append("generate --device=cuda printed nothing")
else:
    notes = [l for l in cuda.stderr.splitlines() if "note:" in l]
    if len(notes) != 1 or "running on the CPU" not in notes[0]:
        fails.append("expected one 'running on the CPU' note, got:\n%s" % cuda.stderr)
    if cuda.stdout != cpu.stdout:
        fails.append("--device=cuda without a GPU gave other text than --device cpu:\n%r\n%r" % (cuda.stdout, cpu.stdout))

for f in fails:
    print("FAIL:", f)
print("device flag: %d failures" % len(fails))
sys.exit(1 if fails else 0)
