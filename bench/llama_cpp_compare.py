#!/usr/bin/env python3
"""llama_cpp_compare: llama.cpp's figures (through llama-cpp-python) on the same
GGUF and thread count as bench_generate, for a side-by-side reading.

Prints prefill tokens/s for a prompt of --prompt-len random tokens and decode
tokens/s at batch 1 (llama-cpp-python drives one sequence; its batched decode
of independent sequences is not exposed), each the best of a few runs.

usage: bench/llama_cpp_compare.py [--model PATH] [--threads N] [--prompt-len N] [--steps N]
needs: pip install llama-cpp-python
"""
import argparse
import random
import time

from llama_cpp import Llama, __version__

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--prompt-len", type=int, default=512)
ap.add_argument("--steps", type=int, default=64)
a = ap.parse_args()

llm = Llama(model_path=a.model, n_ctx=a.prompt_len + a.steps + 8, n_batch=a.prompt_len,
            n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
rng = random.Random(1)
vocab = llm.n_vocab()
prompt = [rng.randrange(200, vocab) for _ in range(a.prompt_len)]

best = 1e30
for _ in range(2):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    best = min(best, time.perf_counter() - t0)
print(f"llama.cpp (llama-cpp-python {__version__}), {a.threads} threads, {a.model}")
print(f"prefill {a.prompt_len} tokens: {best:.3f} s = {a.prompt_len / best:.1f} tokens/s")

best = 1e30
for _ in range(2):
    llm.reset()
    llm.eval(prompt[:64])
    t0 = time.perf_counter()
    for k in range(a.steps):
        llm.eval([prompt[64 + k]])
    best = min(best, time.perf_counter() - t0)
print(f"decode batch  1: {a.steps} steps in {best:.3f} s = {a.steps / best:.1f} tokens/s")
