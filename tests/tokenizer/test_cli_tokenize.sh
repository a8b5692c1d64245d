#!/bin/sh
# test_cli_tokenize: `sglc tokenize` on the real model. Expected ids are
# Hugging Face tokenizers' for SmolLM2 ("Hello" 19556, " world" 905,
# <|im_end|> 2, "Hi" 26843, <|im_start|> 1, "\n" 198; 9 tokens for "Hello world<|im_end|>"
# with special tokens as text).
# Usage: test_cli_tokenize.sh SGLC   (model from $SGL_TEST_MODEL)
SGLC=$1
M=$SGL_TEST_MODEL
if [ ! -f "$M" ]; then
    if [ "$CI" = true ]; then echo "model $M missing"; exit 1; fi
    echo "SKIP: model not available ($M)"; exit 77
fi
pass=0; fail=0
check() { # name, then a shell condition
    name=$1; shift
    if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name"; fi
}
out=$("$SGLC" tokenize --model "$M" "Hello world<|im_end|>")
check "plain ids" sh -c 'printf "%s\n" "$1" | awk "{print \$1}" | tr "\n" " " | grep -q "^19556 905 2 3 "' _ "$out"
check "special marked" sh -c 'printf "%s\n" "$1" | grep -q "^ *2  \"<|im_end|>\"  (special)$"' _ "$out"
check "count line" sh -c 'printf "%s\n" "$1" | tail -n 1 | grep -qx "3 tokens"' _ "$out"
out=$("$SGLC" tokenize --model "$M" --no-special "Hello world<|im_end|>")
check "no-special splits the marker" sh -c '! printf "%s\n" "$1" | grep -q "(special)" && printf "%s\n" "$1" | tail -n 1 | grep -qx "9 tokens"' _ "$out"
out=$("$SGLC" tokenize --model "$M" --json "Hello world<|im_end|>")
check "json ids" sh -c 'printf "%s\n" "$1" | tr -d " \t\n" | grep -q "\"count\":3,\"ids\":\[19556,905,2\]"' _ "$out"
out=$(printf 'Hello' | "$SGLC" tokenize --model "$M" -)
check "stdin" sh -c 'printf "%s\n" "$1" | tr "\n" "|" | grep -q "^ *19556  \"Hello\"|1 token|$"' _ "$out"
out=$("$SGLC" tokenize --model "$M" --chat "Hi")
check "chat template" sh -c 'printf "%s\n" "$1" | grep -q "^ *26843  \"Hi\"$" && printf "%s\n" "$1" | head -n 1 | grep -q "^ *1  \"<|im_start|>\"" && printf "%s\n" "$1" | tail -n 1 | grep -qx "31 tokens"' _ "$out"
"$SGLC" tokenize --model "$M" --bogus x >/dev/null 2>&1
check "unknown option exits 2" test $? -eq 2
echo "test_cli_tokenize.sh: $pass passed, $fail failed"
[ $fail -eq 0 ]
