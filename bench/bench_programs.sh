#!/usr/bin/env bash
# bench_programs.sh: programs/s of the fork-heavy examples (skeleton of
# thought, tree of thought, the branch-solve-merge judge) on the real model,
# at run_batch parallel 1 and 32, with the engine's radix cache on and off
# (sglc run --no-cache), and the cache hit rate of each run. Each instance
# gets its own input (topic, town, question), so the cache only helps where
# the program shares text: fork prefixes and the example's fixed wording.
# Prints one line per run; never asserts.
# usage: bench/bench_programs.sh [SGLC] [MODEL.gguf]
#   env: THREADS (2), N1 (instances at parallel 1, 4), N32 (at parallel 32, 16)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sglc="${1:-$root/build/sglc}"
model="${2:-${SGL_TEST_MODEL:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}}"
threads="${THREADS:-2}" n1="${N1:-4}" n32="${N32:-16}"
[ -x "$sglc" ] || { echo "bench_programs: no sglc at $sglc" >&2; exit 2; }
[ -f "$model" ] || { echo "bench_programs: no model at $model" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# driver EXAMPLE WRAPPER_FN ARGS_EXPR: the example without its main block, a
# wrapper taking one varying input, and a main that runs N instances.
driver() {
  local ex="$1" wrapper="$2" args="$3" out="$tmp/$1.sgl"
  awk '/^main \{/ { exit } { print }' "$root/examples/$ex.sgl" > "$out"
  cat >> "$out" <<EOF
$wrapper
main {
    let args = []
    for i in range(NINST) {
        args += [$args]
    }
    let rs = run_batch(bench_one, args, parallel=PAR)
    print(len(rs))
}
EOF
}

driver skeleton_of_thought \
  'fn bench_one(s, i) { skeleton(s, ["staying healthy", "saving money", "learning a language", "sleeping well", "writing clearly", "cooking at home", "running a meeting", "studying for exams"][i % 8] + f" (case {i})") }' \
  '{"i": i}'
driver tree_of_thought \
  'fn bench_one(s, i) { s += f"Town number {i}, population {1000 + 37 * i}.\n"; let _best = explore(s) }' \
  '{"i": i}'
driver branch_solve_merge \
  'fn bench_one(s, i) { let _t = judge(s, f"What is {i} times 3?", f"It is {3 * i + i % 2}.") }' \
  '{"i": i}'

printf '%-22s %4s %4s %-5s %8s %10s %9s %10s\n' program par n cache seconds programs/s hit_rate requests
for ex in skeleton_of_thought tree_of_thought branch_solve_merge; do
  for par in 1 32; do
    n=$n1; [ "$par" = 32 ] && n=$n32
    for cache in on off; do
      src="$tmp/run.sgl"
      sed "s/NINST/$n/; s/parallel=PAR/parallel=$par/" "$tmp/$ex.sgl" > "$src"
      flag=(); [ "$cache" = off ] && flag=(--no-cache)
      if ! "$sglc" run "$src" --json --stats --model "$model" --threads "$threads" "${flag[@]}" \
           > "$tmp/out.json" 2> "$tmp/err.txt"; then
        echo "bench_programs: $ex par $par cache $cache failed:" >&2
        cat "$tmp/out.json" "$tmp/err.txt" >&2
        exit 1
      fi
      python3 - "$ex" "$par" "$n" "$cache" "$tmp/out.json" "$tmp/err.txt" <<'PY'
import json, re, sys
ex, par, n, cache, out, err = sys.argv[1:]
r = json.load(open(out))
m = re.search(r'prompt (\d+) tokens, (\d+) cached \(([\d.]+)%\)', open(err).read())
secs = r['seconds']
print('%-22s %4s %4s %-5s %8.2f %10.2f %8.1f%% %10d' % (ex, par, n, cache, secs, int(n) / secs,
                                                         float(m[3]), r['requests']))
PY
    done
  done
done
