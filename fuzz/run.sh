#!/bin/sh
# run.sh: build a fuzz target with clang (libFuzzer + ASan + UBSan) and run
# it. Usage: fuzz/run.sh [TARGET] [SECONDS] [extra libFuzzer args...]
# TARGET: lang (default), gguf, tokenizer, json, value (see meson.build).
# Builds with meson into build-fuzz/ (CC=clang, sanitizers on); each
# target's committed seeds (fuzz/corpus for lang, fuzz/corpus-TARGET for the
# others) are copied into build-fuzz/corpus-TARGET, which the fuzzer grows.
# Crashes land in build-fuzz/ as crash-*: fix them and add the input to the
# committed corpus (or, for lang, to tests/lang/cases).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_OUT:-$root/build-fuzz}
case "${1:-}" in
  lang|gguf|tokenizer|json|value) target=$1; shift ;;
  *) target=lang ;;
esac
secs=${1:-600}
[ $# -gt 0 ] && shift
if [ ! -f "$out/build.ninja" ]; then
  CC=clang meson setup "$out" "$root" --buildtype=debugoptimized \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C "$out" "fuzz/fuzz_$target" >/dev/null
seeds=$root/fuzz/corpus-$target
[ "$target" = lang ] && seeds=$root/fuzz/corpus
mkdir -p "$out/corpus-$target"
# libFuzzer adds and reduces files in every corpus directory it is given,
# so the committed seeds are copied into the working corpus, never passed.
cp -n "$seeds"/* "$out/corpus-$target/"
cd "$out"
exec ./fuzz/fuzz_$target -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$out/$target-" "$@" "$out/corpus-$target"
