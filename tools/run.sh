#!/usr/bin/env bash
# Sets up, builds, fetches the default model (SmolLM2-135M-Instruct Q4_1) and answers a chat
# prompt with it. Extra arguments are passed to 'ranklm generate'.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
echo "[run] step 1/4: installing dependencies"
bash tools/setup.sh
echo "[run] step 2/4: building Release in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$(nproc)" --target ranklm
echo "[run] step 3/4: fetching the default model"
model="$(bash tools/fetch_model.sh)"
prompt="What is the capital of France?"
system="You are a helpful assistant."
echo "[run] step 4/4: ranklm generate --model $model --chat --system \"$system\" --prompt \"$prompt\" --temp 0 -n 64"
./build/bin/ranklm generate --model "$model" --chat --system "$system" --prompt "$prompt" --temp 0 -n 64 "$@"
