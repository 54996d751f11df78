#!/usr/bin/env bash
# Layouts by link on the virtual cluster (tests/cluster/cluster.sh, root): 4 hosts in 2 sites
# (h0 h1 | h2 h3) joined by a link of DELAY_MS one way and RATE_MBIT. For PP 2 and TP 2 on two
# hosts of one site and on two hosts of different sites, and PP 4 over all four, with f32 or
# Q8_0 hidden states on the pipeline hops (and TP exact or sum): the decode time per token
# `ranklm bench` measures against what `ranklm plan --explain` predicts from the probe's
# inventory. Writes a table (markdown) and a plot.
#
#   sudo bash bench/cluster.sh [MODEL.gguf]     # default: the TinyLlama-shape Q4_0 (ranklm-synth)
#   DELAY_MS=10 RATE_MBIT=200 NGEN=24 REPS=3 OUT=bench/results/cluster ONLY="PP 4" ...
#   MOE_MODEL=M.gguf (default: ranklm-synth's moe-16x4 Q4_K_M) for the mixture-of-experts rows
#   (EP 2 and attention-by-heads TP 2, inside a site and across sites); ONLY="MoE" runs just those.
#
# Not part of CI: a full run takes about 10 minutes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${RANKLM_BIN:-$root/build/bin}"
model="${1:-$root/models/synth/tinyllama-1.1b-q4_0.gguf}"
delay="${DELAY_MS:-10}" rate="${RATE_MBIT:-200}" ngen="${NGEN:-24}" reps="${REPS:-3}"
out="${OUT:-$root/bench/results/cluster}"
if [[ ! -f "$model" ]]; then
  mkdir -p "$(dirname "$model")"
  "$bin/ranklm-synth" --shape tinyllama-1.1b --type q4_0 -o "$model"
fi
moe="${MOE_MODEL:-$root/models/synth/moe-16x4-q4_k_m.gguf}"
if [[ ( -z "${ONLY:-}" || "MoE" == *"${ONLY:-}"* || "${ONLY:-}" == MoE* ) && ! -f "$moe" ]]; then
  mkdir -p "$(dirname "$moe")"
  "$bin/ranklm-synth" --shape moe-16x4 --type q4_k_m -o "$moe"
fi
work="$(mktemp -d)"
source "$root/tests/cluster/cluster.sh"
trap 'cluster_down; rm -rf "$work"' EXIT
cluster_up "$work/c" "a:h0 a:h1 b:h2 b:h3" "$delay" "$rate"
mpi="$root/tests/cluster/mpirun"
mkdir -p "$(dirname "$out")"
rows="$out.jsonl"
: > "$rows"

# layout NAME HOSTS PLAN-OPTIONS HOPS [MODEL]: plan (with --explain), repack, bench; one JSON row.
layout() {
  local name="$1" hosts="$2" opts="$3" hops="$4" model="${5:-$model}" np
  [[ -n "${ONLY:-}" && "$name $hops" != *"$ONLY"* ]] && return 0
  np="$(echo "$hosts" | wc -w)"
  printf '%s slots=1\n' $hosts > "$work/hosts"
  # shellcheck disable=SC2086
  "$mpi" --hostfile "$work/hosts" -np "$np" "$bin/ranklm" plan -m "$model" -t 1 --layout spread $opts --explain \
    --hops "$hops" --save-inventory "$work/inv.json" -o "$work/plan.json" > "$work/plan.out" 2> "$work/err" || { cat "$work/err"; return 1; }
  [[ "$np" == 4 ]] && cp "$work/inv.json" "$out.inventory.json"  # the 4 hosts as measured
  local predicted
  predicted="$(awk '/^\* chosen/ {for (i = 1; i <= NF; i++) if ($i ~ /^\([0-9]/) {print $(i - 1); exit}}' "$work/plan.out")"
  rm -rf "$work/c/local/s"
  "$mpi" --hostfile "$work/hosts" -np "$np" "$bin/ranklm-repack" -m "$model" --plan "$work/plan.json" \
    -o "$work/c/local/s" > /dev/null 2>&1
  "$mpi" --hostfile "$work/hosts" -np "$np" "$bin/ranklm" bench --shards "$work/c/local/s" -t 1 -p 0 -n "$ngen" \
    -r "$reps" --hops "$hops" -o json > "$work/bench.json" 2> "$work/err" || { cat "$work/err"; return 1; }
  python3 - "$name" "$hops" "$predicted" "$work/bench.json" "$(basename "$model")" >> "$rows" <<'PY'
import json, sys
name, hops, predicted, path, model = sys.argv[1:6]
row = [r for r in json.load(open(path)) if r["n_gen"] > 0][0]
print(json.dumps({"layout": name, "hops": hops, "predicted_ms": float(predicted), "measured_ms": 1000.0 / row["avg_ts"],
                  "model": model}))
PY
  tail -1 "$rows"
}

layout "PP 2 inside a site" "h0 h1" "--tp 1" f32
layout "PP 2 across sites" "h0 h2" "--tp 1" f32
layout "PP 2 across sites" "h0 h2" "--tp 1" q8_0
layout "PP 4 over both sites" "h0 h1 h2 h3" "--tp 1" f32
layout "PP 4 over both sites" "h0 h1 h2 h3" "--tp 1" q8_0
layout "TP 2 inside a site, exact" "h0 h1" "--tp 2 --tp-latency-us 1e9" f32
layout "TP 2 inside a site, sum" "h0 h1" "--tp 2 --tp-latency-us 1e9 --tp-mode sum" f32
layout "TP 2 across sites, exact" "h0 h2" "--tp 2 --tp-latency-us 1e9" f32
layout "TP 2 across sites, sum" "h0 h2" "--tp 2 --tp-latency-us 1e9 --tp-mode sum" f32
# Mixtures of experts: expert parallelism (attention whole on each member) and attention by heads.
layout "MoE EP 2 inside a site" "h0 h1" "--ep 2 --tp-latency-us 1e9" f32 "$moe"
layout "MoE TP 2 inside a site" "h0 h1" "--tp 2 --tp-latency-us 1e9" f32 "$moe"
layout "MoE EP 2 across sites" "h0 h2" "--ep 2 --tp-latency-us 1e9" f32 "$moe"
layout "MoE PP 2 x EP 2 over both sites" "h0 h1 h2 h3" "--ep 2 --tp-latency-us 1e9" f32 "$moe"

# The plot needs matplotlib (Debian's python3-matplotlib, installed by tools/setup.sh): use the
# system Python when the first python3 on PATH lacks it.
py=python3
python3 -c "import matplotlib" 2> /dev/null || py=/usr/bin/python3
"$py" - "$rows" "$out" "$(basename "$model")" "$delay" "$rate" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out, model, delay, rate = sys.argv[2:6]
lines = [f"Virtual cluster, {model} (MoE rows: their own model), 1 thread per rank, {delay} ms one way between the sites, "
         f"{rate} Mbit/s:", "",
         "| layout | model | hops | predicted ms/token | measured ms/token | measured / predicted |", "|---|---|---|---:|---:|---:|"]
for r in rows:
    lines.append(f"| {r['layout']} | {r.get('model', model)} | {r['hops']} | {r['predicted_ms']:.1f} | {r['measured_ms']:.1f} | "
                 f"{r['measured_ms'] / r['predicted_ms']:.2f} |")
open(out + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"{r['layout']}\n{r['hops']} hops" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    ax.bar([i - 0.2 for i in x], [r["predicted_ms"] for r in rows], 0.4, label="predicted (plan --explain)")
    ax.bar([i + 0.2 for i in x], [r["measured_ms"] for r in rows], 0.4, label="measured (ranklm bench)")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("decode ms per token")
    ax.set_yscale("log")
    ax.set_title(f"{model} on the virtual cluster ({delay} ms between sites)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=110)
    print(f"wrote {out}.md and {out}.png")
except ImportError:
    print(f"wrote {out}.md (no matplotlib for the plot)")
PY
