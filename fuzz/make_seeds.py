#!/usr/bin/env python3
# make_seeds.py: writes the seed corpora of the GGUF, tokenizer, JSON and
# value fuzz targets (corpus-*/). The fuzzers grow their own working
# corpora from these; rerun after changing a target's input format.
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(d, name, data):
    os.makedirs(os.path.join(HERE, d), exist_ok=True)
    with open(os.path.join(HERE, d, name), 'wb') as f:
        f.write(data.encode() if isinstance(data, str) else data)


# ---- GGUF (version 3, little endian) ----
def s(x):
    b = x.encode()
    return struct.pack('<Q', len(b)) + b


def kv(key, t, payload):
    return s(key) + struct.pack('<I', t) + payload


def arr(t, items):
    return struct.pack('<IQ', t, len(items)) + b''.join(items)


def gguf(kvs, tensors, align=32):
    out = b'GGUF' + struct.pack('<IQQ', 3, len(tensors), len(kvs)) + b''.join(kvs)
    data = b''
    infos = b''
    for name, ttype, dims, payload in tensors:
        while len(data) % align:
            data += b'\0'
        infos += s(name) + struct.pack('<I', len(dims)) + b''.join(struct.pack('<Q', d) for d in dims)
        infos += struct.pack('<IQ', ttype, len(data))
        data += payload
    out += infos
    while len(out) % align:
        out += b'\0'
    return out + data


def f16(x):
    return struct.pack('<e', x)


meta = [kv('general.architecture', 8, s('llama')), kv('llama.block_count', 4, struct.pack('<I', 1)),
        kv('llama.rope.freq_base', 6, struct.pack('<f', 10000.0)), kv('general.flag', 7, b'\1'),
        kv('x.i64', 11, struct.pack('<q', -5)), kv('x.f64', 12, struct.pack('<d', 0.25)),
        kv('x.ints', 9, arr(5, [struct.pack('<i', i) for i in range(5)])),
        kv('x.strs', 9, arr(8, [s(w) for w in ('a', 'bc', '')]))]
put('corpus-gguf', 'meta_only', gguf(meta, []))
q8 = f16(0.5) + bytes(range(32))
q4_0 = f16(0.25) + bytes(range(16))
q4_1 = f16(0.25) + f16(-1.0) + bytes(range(16))
put('corpus-gguf', 'tensors', gguf(meta, [
    ('w.f32', 0, [4, 2], struct.pack('<8f', *[0.5 * i for i in range(8)])),
    ('w.f16', 1, [4], b''.join(f16(i) for i in range(4))),
    ('w.q4_0', 2, [32], q4_0), ('w.q4_1', 3, [32], q4_1), ('w.q8_0', 8, [32, 2], q8 + q8)]))
put('corpus-gguf', 'nan_weight', gguf(meta[:1], [('w', 0, [4], struct.pack('<4f', 1, float('nan'), 2, 3))]))
put('corpus-gguf', 'bad_scale', gguf(meta[:1], [('w', 8, [32], f16(60000.0) + bytes(32))]))


def byte_char(b):
    ok = lambda k: 33 <= k <= 126 or 161 <= k <= 172 or 174 <= k <= 255
    return chr(b) if ok(b) else chr(256 + sum(1 for k in range(b) if not ok(k)))


tokens = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] + [byte_char(b) for b in range(256)] + ['Ġt', 'he', 'Ġthe']
types = [3, 3, 3] + [1] * (len(tokens) - 3)
tok_kvs = [kv('tokenizer.ggml.model', 8, s('gpt2')), kv('tokenizer.ggml.pre', 8, s('smollm')),
           kv('tokenizer.ggml.tokens', 9, arr(8, [s(t) for t in tokens])),
           kv('tokenizer.ggml.token_type', 9, arr(5, [struct.pack('<i', t) for t in types])),
           kv('tokenizer.ggml.merges', 9, arr(8, [s('Ġ t'), s('h e'), s('Ġt he')])),
           kv('tokenizer.ggml.bos_token_id', 4, struct.pack('<I', 1)),
           kv('tokenizer.ggml.eos_token_id', 4, struct.pack('<I', 2))]
put('corpus-gguf', 'tokenizer', gguf(tok_kvs, []))

# ---- tokenizer: first byte = pre-tokenizer (bits 0-1) and special flag (bit 2) ----
texts = ['Hello world', 'The cat sat on the mat.', "  multiple   spaces\n\n\ttabs", "don't I'll we've",
         '12345 67.89 1,000,000', 'héllo wörld — 日本語 テキスト 🙂👍🏽', '<|im_start|>user\nhi<|im_end|>!!<tool>',
         'a' * 300, 'x\u00a0y\u2028z', '\r\n\r\n', '']
for i, t in enumerate(texts):
    for sel in (0, 1, 2, 3, 4, 5):
        if sel > 3 and '<|' not in t:
            continue
        put('corpus-tokenizer', 't%02d_%d' % (i, sel), bytes([sel]) + t.encode())
put('corpus-tokenizer', 'invalid_utf8', b'\x00\xff\xfe\xc3(\xe2\x82\xa1\xf0\x9f\x98 \x80abc')
put('corpus-tokenizer', 'all_bytes', b'\x02' + bytes(range(256)))

# ---- JSON ----
docs = ['{"a": 1, "b": [true, false, null], "c": {"d": "e"}}', '[1, -2, 3.5, 1e300, -0.0, 12345678901234567890]',
        '"esc \\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\ud83d\\ude00 \\ud800"', '  [ ] ', '{}', '0', '-',
        '[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]', '{"k": 1, "k": 2}', '[1,]', '{"a" 1}', 'tru', '"\x01"',
        '1e999', '[' * 600, '{"nested": {"list": [{"x": [1, {"y": "z"}]}]}}']
for i, d in enumerate(docs):
    put('corpus-json', 'j%02d' % i, d)

# ---- values: op bytes (fuzz_value.c): 0 int, 1 float(8), 2 str(n), 3/4 list(k), 5 nest,
#      6 map, 7 dup, 8 index, 9 none/bool; nest makes a levels ----
prog = [
    bytes([0, 5, 0, 7, 3, 2]),
    bytes([2, 3]) + b'key' + bytes([0, 42, 6, 7, 3, 2]),
    bytes([0, 1, 5, 30]),  # 30 deep
    bytes([0, 1, 5, 255, 5, 255, 5, 255]),  # 765 deep
    bytes([1]) + struct.pack('<d', float('nan')) + bytes([7, 3, 2]),
    bytes([1]) + struct.pack('<d', 2.5) + bytes([9, 3, 9, 0, 3, 3]),
    bytes([0, 1, 0, 2, 3, 2, 7, 3, 2, 8, 0, 8, 1]),
    bytes([2, 5]) + b'a"b\n\x01' + bytes([7, 6, 5, 3]),
]
for i, p in enumerate(prog):
    put('corpus-value', 'v%02d' % i, p)
