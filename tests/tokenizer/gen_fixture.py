#!/usr/bin/env python3
"""gen_fixture.py: writes tests/tokenizer/smollm2_parity.jsonl, the expected
token ids of Hugging Face `tokenizers` for a deterministic corpus of varied
strings, used by test_tokenizer_parity.c against our GGUF-vocabulary tokenizer;
and tests/tokenizer/pretok_splits.jsonl, the word boundaries of the gpt2,
llama-bpe (llama-3), qwen2 and smollm pre-tokenizers on the corpus's short
strings, used by the unit test test_tokenizer.c (no model needed).

Usage (from the repository root; `pip install tokenizers`):
    python3 tests/tokenizer/gen_fixture.py \
        [--tokenizer /work/shared/reference/smollm2-135m-instruct/tokenizer.json] \
        [--out tests/tokenizer/smollm2_parity.jsonl]

Output: JSON lines. Line 1 is a header object {"comment", "tokenizers",
"unicode", "seed", "count"}; each further line is {"text": str, "ids": [...]}
and, when the text contains special-token text, "ids_raw": the ids with
special tokens NOT recognised (HF encode_special_tokens=True; our
parse_special=false), and "decoded": HF's decode of ids when it is not the
text (SmolLM2's vocabulary has no token for 21 bytes, e.g. 0x04; they are
dropped). ids are from encode(text, add_special_tokens=False);
the script checks that add_special_tokens=True gives the same ids for
SmolLM2 (its tokenizer.json has no post-processor, so no BOS is added).
The corpus depends only on SEED and this script. It has no NUL characters
(the C test handles texts as C strings).
"""
import argparse
import json
import random
import unicodedata

SEED = 20261121

WORDS = ("the of and to in is you that it he was for on are as with his they I at be this have "
         "from or one had by word but not what all were we when your can said there use an each "
         "which she do how their if will up other about out many then them these so some her "
         "would make like him into time has look two more write go see number no way could people "
         "my than first water been call who oil its now find long down day did get come made may "
         "part language model token cache radix scheduler inference kernel tensor gradient").split()
CONTRACTIONS = ["I'm", "don't", "they're", "we'll", "he'd", "it's", "you've", "can't", "won't",
                "SHE'S", "I'M", "We'LL", "y'all", "o'clock", "rock'n'roll", "'tis", "ma'am",
                "it''s", "'s", "'S", "'re", "'ll've", "'d'"]
PUNCT = list(".,;:!?-()[]{}\"'`~@#$%^&*_+=|\\/<>") + ["...", "--", "—", "–", "…", "«", "»", "“", "”"]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>",
            "<jupyter_code>", "<empty_output>"]
EMOJI = ["😀", "😂", "🥲", "👍", "👍🏽", "❤️", "🔥", "🚀", "🇫🇷", "🇯🇵", "👨‍👩‍👧‍👦", "👩🏾‍💻",
         "🏳️‍🌈", "1️⃣", "#️⃣", "🧑‍🤝‍🧑", "😶‍🌫️", "🫠", "✌", "☃", "🐈‍⬛"]
SPACES = [" ", "  ", "\t", "\n", "\n\n", "\r\n", "   ", "\u00a0", "\u3000", "\u2009", "\u200b",
          "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u2028", " \n", "\t\t", " \t ", "\n \n"]
CODE = [
    "int main(void) {\n    printf(\"hello %d\\n\", 42);\n    return 0;\n}\n",
    "def f(x):\n    if x > 0:\n\treturn x ** 2\n    return -x  # negative\n",
    "for (size_t i = 0; i < n; i++) sum += a[i] * b[i];",
    "{\"key\": [1, 2.5, -3e10, null, true], \"nested\": {\"a\": \"b\"}}",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "<div class=\"main\"><p>Hi &amp; bye</p></div>",
    "x = lambda a, b: a if a > b else b\nprint(x(3, 4))",
    "#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))\n",
    "    \n\n    fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "git commit -m 'fix: handle CRLF'\r\n$ ls -la /usr/local/bin",
    "const re = /^[a-z0-9_-]{3,16}$/i; // regex",
    "matrix[i][j] += alpha*x[i]*y[j]; /* rank-1 update */",
]
SCRIPTS = {
    "cjk": [(0x4E00, 0x9FFF)], "hira": [(0x3041, 0x3096)], "kata": [(0x30A1, 0x30FA)],
    "hangul": [(0xAC00, 0xD7A3)], "cyr": [(0x0410, 0x044F)], "greek": [(0x0391, 0x03C9)],
    "arabic": [(0x0621, 0x064A)], "hebrew": [(0x05D0, 0x05EA)], "deva": [(0x0905, 0x0939)],
    "thai": [(0x0E01, 0x0E30)], "latin1": [(0x00C0, 0x00FF)],
}
MARKS = [0x0300, 0x0301, 0x0302, 0x0308, 0x0327, 0x0332, 0x064B, 0x0650, 0x05B4, 0x093F,
         0x094D, 0x0E31, 0x0E48, 0x20DD, 0x1AB0]
DIGITS = ["0123456789", "٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９", "²³¹", "½¾⅓", "ⅠⅡⅫ", "①②③", "߀߁",
          "๑๒๓", "𝟘𝟙𝟚"]


def assigned_char(rng):
    """A random code point assigned (not Cn/Cs/Co) in this Python's Unicode."""
    while True:
        plane = rng.random()
        cp = rng.randrange(0x20, 0x3000) if plane < 0.6 else (
            rng.randrange(0x3000, 0x10000) if plane < 0.9 else rng.randrange(0x10000, 0x2FFFF))
        cat = unicodedata.category(chr(cp))
        if cat not in ("Cn", "Cs", "Co"):
            return chr(cp)


def script_text(rng, name, n):
    a, b = rng.choice(SCRIPTS[name])
    return "".join(chr(rng.randrange(a, b + 1)) for _ in range(n))


def prose(rng, n_words):
    out = []
    for i in range(n_words):
        r = rng.random()
        if r < 0.08:
            w = rng.choice(CONTRACTIONS)
        elif r < 0.12:
            w = str(rng.randrange(0, 10 ** rng.randrange(1, 8)))
        else:
            w = rng.choice(WORDS)
            if rng.random() < 0.1:
                w = w.capitalize()
            elif rng.random() < 0.03:
                w = w.upper()
        out.append(w)
        if rng.random() < 0.12:
            out.append(rng.choice(PUNCT))
    sep = " " if rng.random() < 0.8 else rng.choice(SPACES)
    return sep.join(out)


def gen_one(rng, kind):
    if kind == "prose":
        return prose(rng, rng.randrange(1, 40))
    if kind == "code":
        s = rng.choice(CODE)
        if rng.random() < 0.5:
            s = s + rng.choice(SPACES) + rng.choice(CODE)
        return s
    if kind == "script":
        parts = []
        for _ in range(rng.randrange(1, 6)):
            parts.append(script_text(rng, rng.choice(list(SCRIPTS)), rng.randrange(1, 12)))
            parts.append(rng.choice([" ", "", "、", "。", ", ", "\n", "!", " 123 ", "ー"]))
        return "".join(parts)
    if kind == "emoji":
        parts = []
        for _ in range(rng.randrange(1, 8)):
            parts.append(rng.choice(EMOJI))
            if rng.random() < 0.5:
                parts.append(rng.choice([" ", "", "ok", "!", " the ", "\n"]))
        return "".join(parts)
    if kind == "marks":
        s = []
        for _ in range(rng.randrange(1, 10)):
            s.append(rng.choice("aeiouxyzAEIOU") if rng.random() < 0.6 else script_text(rng, "deva", 1))
            for _ in range(rng.randrange(0, 4)):
                s.append(chr(rng.choice(MARKS)))
            if rng.random() < 0.3:
                s.append(" ")
        return unicodedata.normalize("NFD", "".join(s)) if rng.random() < 0.3 else "".join(s)
    if kind == "digits":
        parts = []
        for _ in range(rng.randrange(1, 6)):
            d = rng.choice(DIGITS)
            parts.append("".join(rng.choice(d) for _ in range(rng.randrange(1, 20))))
            parts.append(rng.choice([" ", ".", ",", "", "abc", " x ", "-", "e", "%", "\n"]))
        return "".join(parts)
    if kind == "space":
        parts = []
        for _ in range(rng.randrange(1, 8)):
            parts.append(rng.choice(SPACES) * rng.randrange(1, 4))
            if rng.random() < 0.6:
                parts.append(rng.choice(WORDS + PUNCT + ["123", "é", "中"]))
        return "".join(parts)
    if kind == "special":
        parts = []
        for _ in range(rng.randrange(1, 6)):
            r = rng.random()
            if r < 0.4:
                parts.append(rng.choice(SPECIALS))
            elif r < 0.5:
                sp = rng.choice(SPECIALS)
                parts.append(sp[:rng.randrange(1, len(sp))])  # partial: plain text
            else:
                parts.append(rng.choice(["user\n", "assistant\n", "system\nBe brief.", "Hi!",
                                         " ", "\n", prose(rng, 5)]))
        return "".join(parts)
    if kind == "random":
        return "".join(assigned_char(rng) for _ in range(rng.randrange(1, 30)))
    if kind == "ascii":
        return "".join(chr(rng.randrange(1, 128)) for _ in range(rng.randrange(1, 40)))
    if kind == "mixed":
        return "".join(gen_one(rng, rng.choice(["prose", "script", "emoji", "digits", "space",
                                                "marks"])) for _ in range(rng.randrange(2, 5)))
    raise ValueError(kind)


def corpus(rng):
    texts = ["", " ", "  ", "\n", "\t", "a", "'", "''", "'s", " 's", "1", " 1", "12", "\r\n",
             "Hello world", "Hello, world!", "<|im_start|>", "<|im_start|><|im_end|>",
             "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
             "".join(chr(c) for c in range(32, 127)), "".join(chr(c) for c in range(1, 32)),
             "".join(chr(c) for c in range(0xA0, 0x100)), " " * 100, "\n" * 50, "9" * 300,
             "a" * 1000, "ab" * 700, "中" * 500, "😀" * 100, "\u0301" * 20, "x\u0301" * 50]
    kinds = ["prose"] * 5 + ["code"] * 2 + ["script"] * 3 + ["emoji"] * 2 + ["marks"] * 2 + \
            ["digits"] * 2 + ["space"] * 3 + ["special"] * 2 + ["random"] * 2 + ["ascii"] + \
            ["mixed"] * 3
    while len(texts) < 2300:
        texts.append(gen_one(rng, rng.choice(kinds)))
    for _ in range(6):  # long strings
        texts.append("".join(gen_one(rng, rng.choice(kinds)) for _ in range(rng.randrange(60, 120))))
    return texts


GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
             r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = LLAMA3_RE.replace(r"\p{N}{1,3}", r"\p{N}")


def split_ends(pre, text):
    """Byte end offsets of the words HF's pre-tokenizer produces."""
    ends, pos = [], 0
    for piece, _ in pre.pre_tokenize_str(text):
        pos += len(piece.encode("utf-8"))
        ends.append(pos)
    return ends


def write_splits(path, texts):
    """Pre-tokenizer word boundaries for gpt2 / llama3 / qwen2 / smollm,
    from HF Split(Regex, isolated) (plus Digits for smollm)."""
    from tokenizers import Regex, pre_tokenizers as pt
    pres = {
        "gpt2": pt.Split(Regex(GPT2_RE), behavior="isolated"),
        "llama-bpe": pt.Split(Regex(LLAMA3_RE), behavior="isolated"),
        "qwen2": pt.Split(Regex(QWEN2_RE), behavior="isolated"),
        "smollm": pt.Sequence([pt.Digits(individual_digits=True),
                               pt.Split(Regex(GPT2_RE), behavior="isolated")]),
    }
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({
            "comment": "Pre-tokenizer word end offsets (bytes) from Hugging Face tokenizers' "
                       "Split(Regex(...), isolated); generated by tests/tokenizer/gen_fixture.py.",
            "regex": {"gpt2": GPT2_RE, "llama-bpe": LLAMA3_RE, "qwen2": QWEN2_RE},
            "count": len(texts)}) + "\n")
        for t in texts:
            rec = {"text": t}
            for name, pre in pres.items():
                rec[name] = split_ends(pre, t)
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default="/work/shared/reference/smollm2-135m-instruct/tokenizer.json")
    ap.add_argument("--out", default="tests/tokenizer/smollm2_parity.jsonl")
    ap.add_argument("--splits-out", default="tests/tokenizer/pretok_splits.jsonl")
    args = ap.parse_args()
    import tokenizers
    tok = tokenizers.Tokenizer.from_file(args.tokenizer)
    raw = tokenizers.Tokenizer.from_file(args.tokenizer)
    raw.encode_special_tokens = True
    texts = corpus(random.Random(SEED))
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({
            "comment": "Expected SmolLM2 token ids from Hugging Face tokenizers; generated by "
                       "tests/tokenizer/gen_fixture.py (deterministic, seeded). Do not edit.",
            "tokenizers": tokenizers.__version__, "unicode": unicodedata.unidata_version,
            "seed": SEED, "count": len(texts)}) + "\n")
        for t in texts:
            ids = tok.encode(t, add_special_tokens=False).ids
            assert tok.encode(t, add_special_tokens=True).ids == ids
            rec = {"text": t, "ids": ids}
            dec = tok.decode(ids, skip_special_tokens=False)
            if dec != t:  # bytes the vocabulary cannot represent are dropped
                rec["decoded"] = dec
            if any(sp[:2] in t for sp in SPECIALS):
                r = raw.encode(t, add_special_tokens=False).ids
                if r != ids:
                    rec["ids_raw"] = r
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    # The pre-tokenizer fixture: the corpus's strings under 160 bytes.
    write_splits(args.splits_out, [t for t in texts if len(t.encode("utf-8")) < 160])


if __name__ == "__main__":
    main()
