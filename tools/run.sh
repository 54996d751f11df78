#!/usr/bin/env bash
# Sets up, builds, fetches the default model (SmolLM2-135M-Instruct Q4_1), plans it over 2 MPI
# ranks (each rank reports its machine; the plan places the model), repacks one HDF5 shard per
# rank, and answers a chat prompt with `mpirun -np 2 ranklm generate --shards`. Extra arguments
# are passed to 'ranklm generate'.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
echo "[run] step 1/6: installing dependencies"
bash tools/setup.sh
echo "[run] step 2/6: building Release in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$(nproc)" --target ranklm ranklm-repack
echo "[run] step 3/6: fetching the default model"
model="$(bash tools/fetch_model.sh)"
ranks=2
threads=$(( $(nproc) / ranks )); [ "$threads" -ge 1 ] || threads=1
mpi=(mpirun -np "$ranks")
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
[ "$(nproc)" -lt "$ranks" ] && mpi+=(--oversubscribe)
work="build/run"
mkdir -p "$work"
echo "[run] step 4/6: ${mpi[*]} ranklm plan --model $model -t $threads -o $work/plan.json"
"${mpi[@]}" ./build/bin/ranklm plan --model "$model" -t "$threads" -o "$work/plan.json"
echo "[run] step 5/6: ${mpi[*]} ranklm-repack --model $model --plan $work/plan.json -o $work/shards"
rm -rf "$work/shards"
"${mpi[@]}" ./build/bin/ranklm-repack --model "$model" --plan "$work/plan.json" -o "$work/shards"
system="You are a helpful assistant."
prompts=jobs/examples/prompts.txt
results="$work/results.jsonl"
rm -f "$results"
echo "[run] step 6/6: ${mpi[*]} ranklm run --shards $work/shards -t $threads --prompts $prompts --chat --system \"$system\" --temp 0 -n 64 --out $results"
"${mpi[@]}" ./build/bin/ranklm run --shards "$work/shards" -t "$threads" --prompts "$prompts" --chat --system "$system" \
  --temp 0 -n 64 --out "$results" "$@"
echo "[run] the first answers (all of them, with usage and timing, are in $results):"
python3 - "$results" <<'PY'
import json, sys
records = sorted((json.loads(l) for l in open(sys.argv[1])), key=lambda r: int(r["custom_id"]) if r["custom_id"].isdigit() else 0)
prompts = open("jobs/examples/prompts.txt").read().splitlines()
for r in records[:5]:
    body = r["response"]["body"]
    answer = body["choices"][0]["message"]["content"] if "choices" in body else body["error"]["message"]
    print(f"  [{r['custom_id']}] {prompts[int(r['custom_id']) - 1]}\n      -> {answer[:160]!r}")
PY
