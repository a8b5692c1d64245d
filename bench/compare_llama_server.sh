#!/usr/bin/env bash
# compare_llama_server: sglc serve against llama.cpp's llama-server on the same
# model and thread count, through the same client (bench/bench_server.py,
# OpenAI /v1/completions, 64 clients, shared prefixes, half streamed),
# interleaved: sglc, llama-server, sglc, llama-server.
#
# llama-server is built from the llama-cpp-python sdist (PyPI), vendor/llama.cpp,
# into $WORK (default /tmp/sglc-llama-server). The build turns native tuning
# off and names the instruction sets: a native build dies with SIGILL on AMX
# instructions that some CPUs advertise but their VM does not allow.
#   bench/compare_llama_server.sh [REQUESTS]      (default 1000 per run)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
WORK=${WORK:-/tmp/sglc-llama-server}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
VER=0.3.36
LS="$WORK/llama_cpp_python-$VER/vendor/llama.cpp/build/bin/llama-server"
if [ ! -x "$LS" ]; then
  mkdir -p "$WORK"
  python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$WORK" "llama-cpp-python==$VER"
  tar xzf "$WORK/llama_cpp_python-$VER.tar.gz" -C "$WORK"
  src="$WORK/llama_cpp_python-$VER/vendor/llama.cpp"
  cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
  cmake --build "$src/build" --target llama-server -j"$(nproc)" >/dev/null
fi
PORT=${PORT:-18089}
run_llama() {
  # 64 slots of 1,024 tokens, so every client has a slot (continuous batching is on by default)
  "$LS" -m "$MODEL" -t 2 -tb 2 --host 127.0.0.1 --port "$PORT" -np 64 -c 65536 >"$WORK/llama-server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.5; done
  python3 bench/bench_server.py --url "http://127.0.0.1:$PORT" --api openai --pid "$pid" \
    --clients 64 --requests "$N" --warmup 128 --time-limit 300 || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
run_sglc() {
  python3 bench/bench_server.py --serve build/sglc --model "$MODEL" --threads 2 --api openai \
    --clients 64 --requests "$N" --warmup 128 --time-limit 300 || true
}
for round in 1 2; do
  echo "=== sglc serve ($round)"; run_sglc
  echo "=== llama-server ($round)"; run_llama
done
