#!/usr/bin/env bash
# A rank that never finishes start-up does not leave the job waiting for ever: with
# RANKLM_START_TIMEOUT=3 the job ends within seconds, naming the phase (and the rank) stuck,
#   - a rank stopped (SIGSTOP) before MPI_Init: the other ranks stop at MPI_Init;
#   - a rank whose shard read hangs (its file is a FIFO nobody writes, as a hung file system).
# Usage: startup_watchdog_test.sh RANKLM RANKLM_REPACK FIXTURES
set -u
bin="$1"; repack="$2"; fixtures="$3"
source "$(dirname "$0")/shell_lib.sh"
model="$fixtures/models/tiny-llama-q8_0.gguf"
"$bin" plan -m "$model" -n 2 --pp 2 -o "$tmp/plan.json" > /dev/null 2>&1
"$repack" -m "$model" --plan "$tmp/plan.json" -o "$tmp/shards" 2> /dev/null || { bad "repack"; exit 1; }

# A rank stopped before it reaches MPI_Init.
cat > "$tmp/stop-rank1.sh" <<EOF
#!/usr/bin/env bash
[ "\${OMPI_COMM_WORLD_RANK:-0}" = 1 ] && kill -STOP \$\$
exec "$bin" "\$@"
EOF
chmod +x "$tmp/stop-rank1.sh"
t0=$(date +%s)
RANKLM_START_TIMEOUT=3 timeout 60 "${mpi[@]}" -x RANKLM_START_TIMEOUT -np 2 "$tmp/stop-rank1.sh" \
  logits --shards "$tmp/shards" --tokens 1,2,3 -t 1 > /dev/null 2> "$tmp/err"; rc=$?
s=$(( $(date +%s) - t0 ))
if [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$s" -lt 30 ] && grep -q "start-up did not finish within 3 s (stuck at: MPI_Init)" "$tmp/err"; then
  ok "a rank stopped before MPI_Init: the job ended after $s s naming MPI_Init"
else
  bad "stopped rank: rc $rc after $s s"; tail -5 "$tmp/err"
fi

# A rank whose shard never arrives (reading it hangs).
cp -r "$tmp/shards" "$tmp/hung"
rm "$tmp/hung/rank-00001.h5"
mkfifo "$tmp/hung/rank-00001.h5"
t0=$(date +%s)
RANKLM_START_TIMEOUT=3 timeout 60 "${mpi[@]}" -x RANKLM_START_TIMEOUT -np 2 "$bin" \
  logits --shards "$tmp/hung" --tokens 1,2,3 -t 1 > /dev/null 2> "$tmp/err"; rc=$?
s=$(( $(date +%s) - t0 ))
if [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$s" -lt 30 ] \
   && grep -q "rank 1 (host [^)]*): start-up did not finish within 3 s (stuck at: loading this rank's shard)" "$tmp/err" \
   && grep -q "rank 1 (host [^)]*).*ready message" "$tmp/err"; then
  ok "a rank whose shard read hangs: the job ended after $s s; rank 0 names rank 1 as late, rank 1 names its phase"
else
  bad "hung shard: rc $rc after $s s"; tail -5 "$tmp/err"
fi

exit $((fails > 0))
