#!/bin/sh
# run.sh: build the SGL front-end fuzzer with clang (libFuzzer + ASan + UBSan)
# and run it. Usage: fuzz/run.sh [SECONDS] [extra libFuzzer args...]
# Builds into build-fuzz/ (flex/bison output regenerated there); the seeds
# in fuzz/corpus are copied to build-fuzz/corpus, which the fuzzer grows.
# Crashes land in build-fuzz/ as crash-*; add them to tests/lang/cases.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_OUT:-$root/build-fuzz}
secs=${1:-600}
[ $# -gt 0 ] && shift
mkdir -p "$out/gen" "$out/corpus"
bison -Wall --defines="$out/gen/parser.h" -o "$out/gen/parser.c" "$root/lang/parser.y"
flex -o "$out/gen/lexer.c" "$root/lang/lexer.l"
clang -std=c11 -g -O1 -D_GNU_SOURCE -DSGL_SOURCE_ROOT="\"$root\"" \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$root" -I"$out/gen" \
  "$root"/fuzz/fuzz_lang.c "$root"/lang/ast.c "$root"/lang/check.c "$root"/lang/diag.c \
  "$root"/lang/format.c "$root"/lang/load.c "$root"/lang/regex.c "$root"/util/util.c \
  "$out/gen/parser.c" "$out/gen/lexer.c" -lm -o "$out/fuzz_lang"
# libFuzzer adds and reduces files in every corpus directory it is given,
# so the committed seeds are copied into the working corpus, never passed.
cp -n "$root"/fuzz/corpus/* "$out/corpus/"
cd "$out"
exec ./fuzz_lang -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
  "$@" "$out/corpus"
