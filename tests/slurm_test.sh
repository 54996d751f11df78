#!/usr/bin/env bash
# jobs/ranklm.sbatch for real: a one-node Slurm cluster on this machine (munged, slurmctld and
# slurmd from Debian's slurm-wlm, every daemon on 127.0.0.1, state in a temporary directory),
# the job script submitted with sbatch. It makes a plan from the allocation, the shards, and
# runs the batch job on 2 ranks; the results must be those of one process. A resubmission
# resumes: it answers nothing twice.
# Usage: slurm_test.sh REPO_ROOT RANKLM FIXTURES
set -u
root="$1"; bin="$2"; fixtures="$3"
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -KILL "$p" 2> /dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done; exit 1; }
for t in munged slurmctld slurmd sbatch squeue scontrol; do
  command -v "$t" > /dev/null || fail "$t is not installed (tools/setup.sh installs slurmctld, slurmd, slurm-client and munge)"
done

# munge: a private key and socket.
mkdir -p "$tmp/munge" && chmod 700 "$tmp/munge"
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 2> /dev/null && chmod 400 "$tmp/munge/munge.key"
munged --force --key-file="$tmp/munge/munge.key" --socket="$tmp/munge/munge.sock" --pid-file="$tmp/munge/munged.pid" \
  --log-file="$tmp/munged.log" --seed-file="$tmp/munge/seed" || fail "munged did not start"
pids+=("$(cat "$tmp/munge/munged.pid")")

# Slurm: one node (this host, by its short name, reached at 127.0.0.1), one partition.
host="$(hostname -s)"
read -r p1 p2 < <(python3 -c "
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(('127.0.0.1', 0))
print(*(s.getsockname()[1] for s in ss))")
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/work"
cat > "$tmp/slurm.conf" <<EOF
ClusterName=ranklmtest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/munge.sock
SlurmctldPort=$p1
SlurmdPort=$p2
CommunicationParameters=NoInAddrAny
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$tmp/slurm.conf"
slurmctld -D -i -f "$SLURM_CONF" > "$tmp/slurmctld.out.log" 2>&1 & pids+=($!)
slurmd -D -N "$host" -f "$SLURM_CONF" > "$tmp/slurmd.out.log" 2>&1 & pids+=($!)
for _ in $(seq 1 60); do
  sinfo -h -o %t 2> /dev/null | grep -qE '^(idle|mix)' && break
  sleep 0.5
done
sinfo -h -o %t 2> /dev/null | grep -qE '^(idle|mix)' || fail "the Slurm node did not come up: $(sinfo 2>&1 | tail -2)"
echo "ok   one-node Slurm up: $(sinfo -h -o '%P %D %c %t')"

# The job: the fixture model, 10 text prompts, 2 ranks on the node.
model="$fixtures/models/tiny-llama-q8_0.gguf"
for i in $(seq 1 10); do echo "Slurm prompt $i: the river and the mountain"; done > "$tmp/prompts.txt"
args="-n 8 --temp 0.7 --seed 4 --parallel 4"
"$bin" run -m "$model" --prompts "$tmp/prompts.txt" --out "$tmp/ref.jsonl" -t 1 --progress none $args 2> /dev/null \
  || fail "the one-process reference run"
submit() {
  (cd "$tmp/work" && timeout 300 sbatch --wait --parsable --ntasks-per-node=2 --cpus-per-task=1 --output="$tmp/job$1.log" \
    --export=ALL,RANKLM_HOME="$root",MODEL="$model",PROMPTS="$tmp/prompts.txt",OUT="$tmp/results.jsonl",SHARDS="$tmp/shards",RUN_ARGS="$args" \
    "$root/jobs/ranklm.sbatch")
}
id=$(submit 1) || fail "sbatch --wait: job ${id:-?} failed: $(tail -5 "$tmp/job1.log" 2> /dev/null)"
state=$(scontrol show job "$id" 2> /dev/null | grep -o 'JobState=[A-Z]*' | head -1)
python3 - "$tmp/ref.jsonl" "$tmp/results.jsonl" <<'PY' || fail "results differ from one process ($state)"
import json, sys
load = lambda p: {r["custom_id"]: r["response"]["body"]["choices"][0]["text"] for r in map(json.loads, open(p))}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert len(a) == 10 and a == b, (len(a), len(b))
PY
grep -q "ranklm job $id: 2 ranks" "$tmp/job1.log" || fail "the job log does not show 2 ranks"
echo "ok   sbatch jobs/ranklm.sbatch (job $id, $state): plan, shards and 2-rank batch job; 10 results as one process gives them"

# Resubmitted (as after a time limit): it resumes and answers nothing twice.
id2=$(submit 2) || fail "the resubmitted job failed: $(tail -5 "$tmp/job2.log")"
grep -q "0 requests to answer (10 already in the results file)" "$tmp/job2.log" || fail "the resubmitted job did not resume"
[ "$(wc -l < "$tmp/results.jsonl")" = 10 ] || fail "records after resubmission: $(wc -l < "$tmp/results.jsonl")"
echo "ok   resubmitted (job $id2): resumed, nothing answered twice"

# The documented JSONL example: PROMPTS=requests.jsonl with the default RUN_ARGS (text prompts
# go through the chat template; a JSONL request names its own endpoint).
for i in 1 2 3; do
  echo "{\"custom_id\": \"j$i\", \"method\": \"POST\", \"url\": \"/v1/completions\", \"body\": {\"prompt\": \"the river $i\", \"max_tokens\": 4}}"
done > "$tmp/requests.jsonl"
jid=$(cd "$tmp/work" && timeout 300 sbatch --wait --parsable --ntasks-per-node=2 --cpus-per-task=1 --output="$tmp/jsonl.log" \
  --export=ALL,RANKLM_HOME="$root",MODEL="$model",PROMPTS="$tmp/requests.jsonl",OUT="$tmp/jsonl.jsonl",SHARDS="$tmp/shards" \
  "$root/jobs/ranklm.sbatch") || fail "sbatch with PROMPTS=requests.jsonl and the default RUN_ARGS: $(tail -3 "$tmp/jsonl.log")"
[ "$(grep -c '"status_code": *200' "$tmp/jsonl.jsonl")" = 3 ] || fail "the JSONL job's results: $(head -c 400 "$tmp/jsonl.jsonl")"
echo "ok   sbatch with PROMPTS=requests.jsonl and the default RUN_ARGS (job $jid): 3 results"

# LAUNCHER=srun: the job script picks srun's PMIx plugin (srun's default here is --mpi=none), and
# ranklm started by srun without one refuses with what to start instead of running alone.
sid2=$(cd "$tmp/work" && timeout 300 sbatch --wait --parsable --ntasks-per-node=2 --cpus-per-task=1 --output="$tmp/srun.log" \
  --export=ALL,RANKLM_HOME="$root",MODEL="$model",PROMPTS="$tmp/prompts.txt",OUT="$tmp/srun.jsonl",SHARDS="$tmp/shards",RUN_ARGS="$args",LAUNCHER=srun \
  "$root/jobs/ranklm.sbatch") || fail "LAUNCHER=srun: job ${sid2:-?} failed: $(tail -5 "$tmp/srun.log")"
python3 - "$tmp/ref.jsonl" "$tmp/srun.jsonl" <<'PY' || fail "LAUNCHER=srun: results differ from one process"
import json, sys
load = lambda p: {r["custom_id"]: r["response"]["body"]["choices"][0]["text"] for r in map(json.loads, open(p))}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert len(a) == 10 and a == b, (len(a), len(b))
PY
echo "ok   LAUNCHER=srun (job $sid2): srun --mpi=pmix chosen by the job script; 10 results as one process gives them"
(cd "$tmp/work" && timeout 120 srun --mpi=none -n 2 "$bin" generate -m "$model" -p hi -n 2 > "$tmp/nopmi.out" 2> "$tmp/nopmi.err"); rc=$?
[ "$rc" -ne 0 ] && grep -q "each is a job of one rank" "$tmp/nopmi.err" && grep -q -- "srun --mpi=pmix" "$tmp/nopmi.err" ||
  fail "srun --mpi=none -n 2: rc $rc, $(head -c 400 "$tmp/nopmi.err")"
(cd "$tmp/work" && timeout 120 srun --mpi=none -n 1 "$bin" generate -m "$model" -p hi -n 2 > /dev/null 2>&1) ||
  fail "srun --mpi=none -n 1: one task is a job of one rank and must run"
echo "ok   srun --mpi=none -n 2 refused naming srun --mpi=pmix; -n 1 runs"

# jobs/serve.sbatch: the server for the length of a job. It prints where it listens; scancel
# stops it gracefully (a running request still finishes) and the ranks end cleanly.
(cd "$tmp/work" && sbatch --parsable --ntasks-per-node=2 --cpus-per-task=1 --output="$tmp/serve.log" \
  --export=ALL,RANKLM_HOME="$root",MODEL="$model",SHARDS="$tmp/shards",HOST=127.0.0.1,PORT=0,URL_FILE="$tmp/url",SERVE_ARGS="--parallel 2 --ctx-size 256" \
  "$root/jobs/serve.sbatch" > "$tmp/serve.id") || fail "sbatch jobs/serve.sbatch"
sid="$(cat "$tmp/serve.id")"
for _ in $(seq 1 120); do grep -q "^serving at " "$tmp/serve.log" 2> /dev/null && break; sleep 0.5; done
grep -q "^serving at http://.*/v1 (job $sid)" "$tmp/serve.log" || fail "the serve job did not say where it listens"
url="$(cat "$tmp/url")"
port="${url##*:}"; port="${port%/v1}"
curl -s "http://127.0.0.1:$port/v1/models" | grep -q '"object":"list"' || fail "GET /v1/models on the served job"
curl -s "http://127.0.0.1:$port/v1/completions" -d '{"prompt": "the river", "max_tokens": 200, "ignore_eos": true}' \
  -o "$tmp/long.json" -w '%{http_code}' > "$tmp/long.code" &
curler=$!
sleep 0.3
scancel "$sid"
wait "$curler"
# (a cancelled job leaves squeue at once: the script's last line tells when it has ended)
for _ in $(seq 1 180); do grep -q "^server stopped cleanly\|^server ended" "$tmp/serve.log" && break; sleep 0.5; done
grep -q '"completion_tokens":200' "$tmp/long.json" && [ "$(cat "$tmp/long.code")" = 200 ] ||
  fail "the request running at scancel did not finish: $(cat "$tmp/long.code") $(head -c 300 "$tmp/long.json")"
grep -q "server stopped cleanly" "$tmp/serve.log" ||
  fail "the serve job did not stop cleanly"
[ ! -e "$tmp/url" ] || fail "the serve job left its URL file"
echo "ok   sbatch jobs/serve.sbatch (job $sid): printed $url; scancel let the running request finish and stopped every rank"
