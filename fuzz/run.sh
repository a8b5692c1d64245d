#!/bin/sh
# run.sh: build a fuzz target with clang (libFuzzer + ASan + UBSan) and run
# it. Usage: fuzz/run.sh [TARGET] [SECONDS] [extra libFuzzer args...]
# TARGET: lang (default), gguf, tokenizer, json, value (see meson.build).
# The code under test is compiled with clang and instrumented; the rest of
# the project comes from the release libraries of the ordinary build
# ($BUILD, default build/: run ./scripts/setup or ninja -C build first).
# Outputs go to build-fuzz/; each target's committed seeds (fuzz/corpus for
# lang, fuzz/corpus-TARGET for the others) are copied into
# build-fuzz/corpus-TARGET, which the fuzzer grows. Crashes land in
# build-fuzz/ as TARGET-crash-*: fix them and add the input to the committed
# corpus (or, for lang, to tests/lang/cases).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_OUT:-$root/build-fuzz}
build=${BUILD:-$root/build}
case "${1:-}" in
  lang|gguf|tokenizer|json|value) target=$1; shift ;;
  *) target=lang ;;
esac
secs=${1:-600}
[ $# -gt 0 ] && shift
mkdir -p "$out/gen"
cflags="-std=c11 -g -O1 -D_GNU_SOURCE -DSGL_SOURCE_ROOT=\"$root\" -fsanitize=fuzzer,address,undefined
  -fno-sanitize-recover=undefined -I$root -I$build"
libs="-Wl,--start-group $build/vm/libsgl_vm.a $build/compiler/libsgl_compiler.a $build/lang/libsgl_lang.a
  $build/lang/libsgl_lang_gen.a $build/runtime/libsgl_runtime.a $build/kernels/libsgl_kernels.a
  $build/kernels/libsgl_kernels_avx2.a $build/kernels/libsgl_kernels_vnni.a $build/util/libsgl_util.a
  -Wl,--end-group -lcjson -lcurl -lm -lpthread"
case $target in
  lang)
    bison -Wall --defines="$out/gen/parser.h" -o "$out/gen/parser.c" "$root/lang/parser.y"
    flex -o "$out/gen/lexer.c" "$root/lang/lexer.l"
    # shellcheck disable=SC2086
    clang $cflags -I"$out/gen" "$root"/fuzz/fuzz_lang.c "$root"/lang/ast.c "$root"/lang/check.c \
      "$root"/lang/diag.c "$root"/lang/format.c "$root"/lang/load.c "$root"/lang/regex.c "$root"/util/util.c \
      "$out/gen/parser.c" "$out/gen/lexer.c" -lm -o "$out/fuzz_lang"
    seeds=$root/fuzz/corpus ;;
  gguf) cov="$root/runtime/gguf.c" ;;
  tokenizer) cov="$root/runtime/tokenizer.c $root/runtime/unicode.c" ;;
  json|value) cov="$root/vm/value.c" ;;
esac
if [ "$target" != lang ]; then
  # shellcheck disable=SC2086
  clang $cflags "$root/fuzz/fuzz_$target.c" $cov $libs -o "$out/fuzz_$target"
  seeds=$root/fuzz/corpus-$target
fi
mkdir -p "$out/corpus-$target"
# libFuzzer adds and reduces files in every corpus directory it is given,
# so the committed seeds are copied into the working corpus, never passed.
cp -n "$seeds"/* "$out/corpus-$target/"
cd "$out"
exec ./fuzz_$target -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$out/$target-" "$@" "$out/corpus-$target"
