#!/usr/bin/env bash
# Sets up, builds, fetches the default model (SmolLM2-135M-Instruct Q4_1), plans it under mpirun
# (each rank reports its machine; the plan picks the layout: on one host, one rank with every
# core), repacks one HDF5 shard per rank of the plan, and runs the batch job of
# jobs/examples/prompts.txt with `mpirun -np <ranks> ranklm run --shards`. Extra arguments are
# passed to 'ranklm run'.
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
# The plan is made under mpirun with one rank per core (each reports its place); on one host it
# picks what serves a batch job fastest (one rank with every core, when the model fits) and the
# job runs with the ranks and threads it picked.
probe_ranks=2
[ "$(nproc)" -ge 2 ] || probe_ranks=1
mpi=(mpirun)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
[ "$(nproc)" -lt "$probe_ranks" ] && mpi+=(--oversubscribe)
work="build/run"
mkdir -p "$work"
echo "[run] step 4/6: ${mpi[*]} -np $probe_ranks ranklm plan --model $model -t 1 -o $work/plan.json"
"${mpi[@]}" -np "$probe_ranks" ./build/bin/ranklm plan --model "$model" -t 1 -o "$work/plan.json"
read -r ranks threads < <(python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))
print(p["world_size"], min(x["cores"] for x in p["placement"]) if p.get("placement") else 1)' "$work/plan.json")
# Each rank gets its threads' cores (mpirun would otherwise bind a rank to one core).
mpi+=(--map-by "slot:PE=$threads")
echo "[run] step 5/6: ${mpi[*]} -np $ranks ranklm-repack --model $model --plan $work/plan.json -o $work/shards"
rm -rf "$work/shards"
"${mpi[@]}" -np "$ranks" ./build/bin/ranklm-repack --model "$model" --plan "$work/plan.json" -o "$work/shards"
prompts=jobs/examples/prompts.txt
results="$work/results.jsonl"
rm -f "$results"
# Chat prompts through the model's own template, with its own default system prompt (--system
# would replace it).
echo "[run] step 6/6: ${mpi[*]} -np $ranks ranklm run --shards $work/shards -t $threads --parallel 16 --prompts $prompts --chat --temp 0 -n 64 --out $results"
"${mpi[@]}" -np "$ranks" ./build/bin/ranklm run --shards "$work/shards" -t "$threads" --parallel 16 --prompts "$prompts" --chat \
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
