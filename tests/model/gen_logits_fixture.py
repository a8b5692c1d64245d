#!/usr/bin/env python3
"""gen_logits_fixture: records llama.cpp's greedy continuations and logits for
the model-parity test (tests/model/test_parity.c).

For each prompt (plain text, or a chat rendered with the GGUF's own Jinja chat
template) it stores the prompt's token ids as llama.cpp tokenizes them, the
greedy continuation of N_STEPS tokens, and at every step the top-5
(token id, logit) pairs of llama.cpp's logits. The C test feeds the same ids
to model_forward, so the comparison does not depend on our tokenizer.

A second, tight reference removes the quantization of activations from the
comparison: every tensor is dequantized to F32 into a temporary GGUF (with the
gguf package), and llama.cpp runs the prompt + the greedy continuation on it
(teacher-forced); "f32_steps" holds its top-5 (id, logit) per step. Our
forward on the same dequantized weights must agree closely with that. On the
same weights llama.cpp also decodes greedily on its own: "f32_continuation"
and "f32_greedy_steps" (top-5 per step), which our greedy run must reproduce.

Reference: llama-cpp-python (pip install llama-cpp-python; builds llama.cpp
from the sdist, needs cmake), CPU, 2 threads.

usage: gen_logits_fixture.py [--only-f32] [MODEL.gguf] [OUT.json]
  --only-f32: keep the quantized part of an existing OUT.json, redo the F32 parts.
"""
import json
import os
import sys
import tempfile

import gguf
from gguf.quants import dequantize

import jinja2
import numpy as np
from llama_cpp import Llama, __version__ as llama_cpp_version

N_STEPS = 16
TOP = 5

CHATS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "What is 12 times 7?",
    "Give me three tips for learning to code.",
    "Translate 'good morning' into Spanish.",
    "Who wrote Romeo and Juliet?",
    "List the planets of the solar system.",
    "What does a CPU do?",
    "Tell me a short joke about cats.",
]
SYSTEM_CHATS = [
    ("You are a helpful assistant.", "What is the capital of Japan?"),
    ("You are a pirate. Answer like one.", "How are you today?"),
]
PLAIN = [
    "The quick brown fox",
    "Once upon a time, in a small village by the mountains,",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "1, 2, 3, 4, 5,",
    "The capital of Germany is",
    "In 1969, the first humans landed on",
    "import numpy as np\nx = np.arange(10)\nprint(",
    "Les pommes sont",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    # a longer context (~250 tokens) to exercise attention over many keys
    ("The history of computing is long and varied. Early mechanical calculators "
     "such as the abacus and Pascal's calculator helped people do arithmetic. In the "
     "nineteenth century, Charles Babbage designed the Analytical Engine, and Ada "
     "Lovelace wrote what many consider the first program. The twentieth century "
     "brought electronic computers: ENIAC, the transistor, integrated circuits and "
     "finally the microprocessor. Personal computers arrived in the 1970s and 1980s, "
     "followed by the internet, which connected machines across the world. Today, "
     "smartphones carry more computing power than the machines that sent people to "
     "the moon, and machine learning models can write text, recognise images and "
     "translate languages. Looking back over this history, the most important "
     "lesson is that"),
]


def write_f32_copy(src, dst):
    """Writes src with every tensor dequantized to F32 (metadata copied)."""
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            et = f.types[1]
            if et == gguf.GGUFValueType.STRING:
                v = [bytes(f.parts[i]).decode("utf-8", "surrogateescape") for i in f.data]
            else:
                v = [f.parts[i][0].item() for i in f.data]
            w.add_key_value(k, v, t, sub_type=et)
        elif t == gguf.GGUFValueType.STRING:
            w.add_key_value(k, bytes(f.parts[f.data[0]]).decode("utf-8"), t)
        else:
            w.add_key_value(k, f.parts[f.data[0]][0].item(), t)
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, a.reshape([int(x) for x in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def top_of(logits):
    order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))[:TOP]
    return [[int(i), float(logits[i])] for i in order]


def greedy(llm, ids):
    """Free-running greedy decoding of N_STEPS tokens after ids; returns the
    continuation and the top-TOP (id, logit) of every step."""
    llm.reset()
    llm.eval(ids)
    steps, cont = [], []
    for _ in range(N_STEPS):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = top_of(logits)
        steps.append({"top": top})
        cont.append(top[0][0])
        llm.eval([top[0][0]])
    return cont, steps


def add_f32_steps(model, doc):
    """On the weights dequantized to F32: "f32_steps", the top-5 along the
    quantized run's continuation (teacher-forced), and "f32_continuation" /
    "f32_greedy_steps", llama.cpp's own free-running greedy decoding there."""
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "f32.gguf")
        write_f32_copy(model, f32)
        llm = Llama(model_path=f32, n_ctx=1024, n_batch=1024, n_threads=2, logits_all=True,
                    seed=0, verbose=False)
        for c in doc["cases"]:
            ids = c["prompt"] + c["continuation"][:-1]
            llm.reset()
            llm.eval(ids)
            np_ = len(c["prompt"])
            c["f32_steps"] = [{"top": top_of(np.array(llm.scores[np_ - 1 + k], dtype=np.float32))}
                              for k in range(len(c["continuation"]))]
            c["f32_continuation"], c["f32_greedy_steps"] = greedy(llm, c["prompt"])
        del llm
    doc["f32_reference"] = (f"llama-cpp-python {llama_cpp_version} on the weights dequantized "
                            "to F32 (gguf package)")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    only_f32 = "--only-f32" in sys.argv
    model = args[0] if len(args) > 0 else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    out = args[1] if len(args) > 1 else "tests/model/logits_fixture.json"
    if only_f32:
        with open(out) as f:
            doc = json.load(f)
        add_f32_steps(model, doc)
        with open(out, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        return
    llm = Llama(model_path=model, n_ctx=1024, n_batch=1024, n_threads=2, logits_all=True,
                seed=0, verbose=False)
    tmpl = jinja2.Environment(trim_blocks=False, lstrip_blocks=False).from_string(
        llm.metadata["tokenizer.chat_template"])

    prompts = []
    for q in CHATS:
        prompts.append(("chat", tmpl.render(messages=[{"role": "user", "content": q}],
                                            add_generation_prompt=True)))
    for s, q in SYSTEM_CHATS:
        prompts.append(("chat", tmpl.render(messages=[{"role": "system", "content": s},
                                                      {"role": "user", "content": q}],
                                            add_generation_prompt=True)))
    for p in PLAIN:
        prompts.append(("plain", p))

    cases = []
    for kind, text in prompts:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        cont, steps = greedy(llm, ids)
        cases.append({"kind": kind, "text": text, "prompt": [int(i) for i in ids],
                      "continuation": cont, "steps": steps})
        print(f"{kind:5s} {len(ids):4d} tokens -> {llm.detokenize(cont).decode('utf-8', 'replace')!r}")

    doc = {
        "generator": "tests/model/gen_logits_fixture.py",
        "reference": f"llama-cpp-python {llama_cpp_version} (llama.cpp CPU, 2 threads)",
        "model": model.split("/")[-1],
        "n_steps": N_STEPS,
        "top": TOP,
        "cases": cases,
    }
    add_f32_steps(model, doc)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
