# Sourced by the Slurm job scripts (ranklm.sbatch, serve.sbatch) after their settings:
#   ranklm_launcher   sets bin, threads and the launch command (LAUNCHER=mpirun or srun)
#   ranklm_shards     makes the plan and the shards in $SHARDS once (from $MODEL, over the
#                     allocation), and with NODE_LOCAL=1 each node's own shards in $LOCAL_DIR;
#                     sets run_shards to the directory the ranks read.
ranklm_launcher() {
  bin="$RANKLM_HOME/build/bin"
  threads="${SLURM_CPUS_PER_TASK:-1}"
  case "$LAUNCHER" in
    mpirun) launch=(mpirun --map-by "slot:PE=$threads" --bind-to core)
            [ "$(id -u)" -eq 0 ] && launch+=(--allow-run-as-root) ;;
    srun)   launch=(srun --cpu-bind=cores "--mpi=$(ranklm_srun_mpi)") || exit 2 ;;
    *) echo "LAUNCHER must be mpirun or srun (got $LAUNCHER)" >&2; exit 2 ;;
  esac
}

# The PMI plugin srun starts the ranks with. Open MPI finds the job's other ranks through PMIx;
# without it (srun's default is often --mpi=none) every task would be a job of one rank. A user's
# SLURM_MPI_TYPE wins; otherwise the first PMIx plugin `srun --mpi=list` names.
ranklm_srun_mpi() {
  if [ -n "${SLURM_MPI_TYPE:-}" ] && [ "$SLURM_MPI_TYPE" != none ]; then echo "$SLURM_MPI_TYPE"; return 0; fi
  local offered
  offered="$(srun --mpi=list 2>&1 | grep -oE '(^|[[:space:]:])pmix[a-z0-9_]*' | tr -d ' :\t' | sort -u)"
  if printf '%s\n' "$offered" | grep -qx pmix; then echo pmix; return 0; fi
  if [ -n "$offered" ]; then printf '%s\n' "$offered" | head -1; return 0; fi
  echo "LAUNCHER=srun: this Slurm offers no PMIx plugin (srun --mpi=list: $(srun --mpi=list 2>&1 | tr '\n' ' '))," \
       "and Open MPI needs PMIx to see the job's ranks (without it every task runs alone)." \
       "Use LAUNCHER=mpirun (Open MPI reads the allocation itself), or ask the site for Slurm's PMIx plugin." >&2
  return 1
}

ranklm_shards() {
  # The ranks describe the allocation and the plan places the model over all of its tasks
  # (--layout spread: the job runs the tasks it was given; on one node the default would pick
  # one rank with every core, for a job launched with that many ranks).
  if [ ! -f "$SHARDS/manifest.json" ] || ! grep -q '"complete": *true' "$SHARDS/manifest.json"; then
    [ -f "$MODEL" ] || { echo "no shards in $SHARDS and no model at $MODEL to make them from" >&2; exit 2; }
    mkdir -p "$SHARDS"
    "${launch[@]}" "$bin/ranklm" plan --model "$MODEL" -t "$threads" --layout spread -o "$SHARDS.plan.json"
    "${launch[@]}" "$bin/ranklm-repack" --model "$MODEL" --plan "$SHARDS.plan.json" -o "$SHARDS"
  fi
  run_shards="$SHARDS"
  # Optionally, each node reads its ranks' shards from its own disk (one copy per node).
  if [ "${NODE_LOCAL:-0}" = 1 ]; then
    "${launch[@]}" "$bin/ranklm-repack" --model "$MODEL" --plan "$SHARDS.plan.json" -o "$LOCAL_DIR"
    run_shards="$LOCAL_DIR"
  fi
}
