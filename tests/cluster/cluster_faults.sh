# Faults on the virtual cluster (sourced by cluster_test.sh, after its batch job made the plan
# and the node-local shards): a batch job of 40 prompts on 4 hosts, and while it runs
#   - rank 3 is SIGKILLed: the job ends at once, mpirun naming the rank and host;
#   - h3 is cut off the network: ranklm names h3 and its rank after the step timeout (10 s
#     here) and the job ends within 60 s of it, although mpirun cannot reach h3's daemon;
#   - h3 dies (cut off, every process killed, its daemon unreachable for a new job): the same,
#     and a resubmission while it is down fails at once naming h3 and its ranks;
# each time the results file holds whole records only, and a resubmission once the host is back
# completes the job with the results of an uninterrupted run.

python3 -c "
for i in range(40): print(f'Fault prompt {i}: the river number {i} and its mountain')" > "$tmp/fprompts.txt"
"$bin" run -m "$model" --prompts "$tmp/fprompts.txt" --out "$tmp/fault-ref.jsonl" -n 24 --temp 0 --progress none -t 1 2> /dev/null
fault_job() {  # out: the job in the foreground, output to out.log
  MPIRUN="$here/mpirun" HOSTFILE="$tmp/c/hosts" NP=4 THREADS=1 BIND=none MODEL="$model" PROMPTS="$tmp/fprompts.txt" \
    OUT="$1" SHARDS="$local_dir/job" PLAN="$tmp/job-plan.json" RANKLM_BIN="$bindir" RANKLM_COMM_TIMEOUT=10 \
    RANKLM_ABORT_GRACE=20 timeout 400 bash "$root/jobs/run_mpirun.sh" -n 24 --temp 0 --progress none --parallel 2 \
    >> "$1.log" 2>&1
}
records() { [[ -f "$1" ]] && wc -l < "$1" || echo 0; }
wait_records() {  # file n: until the job has written n records (60 s at most)
  local i
  for i in $(seq 1 600); do
    [[ $(records "$1") -ge $2 ]] && return 0
    sleep 0.1
  done
  return 1
}
ranklm_pid_on() {  # host: its ranklm process
  local p
  for p in $(ip netns pids "$CLUSTER_ID-$1"); do
    [[ "$(cat "/proc/$p/comm" 2> /dev/null)" == ranklm ]] && { echo "$p"; return; }
  done
}
whole_records() { python3 -c "
import json, sys
for n, line in enumerate(open(sys.argv[1]), 1): json.loads(line)" "$1"; }

# fault NAME ACTION LIMIT PATTERN: runs the job, does ACTION once 3 records are written, and
# checks that the job ends within LIMIT seconds of ACTION with PATTERN in its output.
fault() {
  local name="$1" action="$2" limit="$3" pattern="$4" out="$tmp/fault-$1.jsonl"
  rm -f "$out" "$out.log"
  fault_job "$out" &
  local job=$!
  if ! wait_records "$out" 3; then
    bad "$name: the job wrote no records"; kill "$job"; wait "$job"; tail -20 "$out.log"; return
  fi
  local t0=$SECONDS
  $action
  wait "$job"
  local rc=$? took=$((SECONDS - t0))
  if [[ $rc -ne 0 && $took -le $limit ]] && grep -q "$pattern" "$out.log" && whole_records "$out"; then
    ok "$name: the job ended ${took} s after it (limit ${limit} s), $(records "$out") whole records; it said:"
    grep -E "ranklm .*error on rank|has not ended the job|lost communication|exited on signal|node h3" "$out.log" | sort -u | head -4 | sed 's/^/       /'
  else
    bad "$name: rc $rc after ${took} s (limit ${limit} s), pattern '$pattern' $(grep -c "$pattern" "$out.log") times"
    tail -25 "$out.log"
  fi
}
resume() {  # name: the job resubmitted completes with the uninterrupted run's results
  local out="$tmp/fault-$1.jsonl"
  if fault_job "$out" && python3 "$here/same_results.py" "$tmp/fault-ref.jsonl" "$out"; then
    ok "$1: resubmitted, every prompt answered once with the uninterrupted run's results"
  else
    bad "$1: the resubmission"; tail -20 "$out.log"
  fi
}

kill_rank3() { kill -9 "$(ranklm_pid_on h3)"; }
fault killed-rank kill_rank3 30 "h3"
resume killed-rank

fault partition "cluster_partition h3" 70 "host h3, which runs rank 3"
cluster_heal h3
cluster_kill_host h3  # what was left there (it could not hear that the job ended)
resume partition

fault dead-host "cluster_host_down h3" 70 "host h3, which runs rank 3"
# While h3 is down, a resubmission fails at once and names it.
out="$tmp/fault-dead-host.jsonl"
t0=$SECONDS
if ! fault_job "$out" && grep -q "h3.*did not answer" "$out.log" && [[ $((SECONDS - t0)) -le 60 ]]; then
  ok "dead-host: a resubmission while h3 is down fails in $((SECONDS - t0)) s naming it: $(grep 'did not answer' "$out.log" | head -1)"
else
  bad "dead-host: resubmission while h3 is down"; tail -20 "$out.log"
fi
cluster_host_up h3
resume dead-host
