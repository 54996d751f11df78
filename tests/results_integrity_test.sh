#!/usr/bin/env bash
# The results file of `ranklm run` is never lost, torn or written by two jobs:
#   - two jobs on one --out: the second refuses at once naming the holder's host and pid, or
#     waits with --wait-lock; the first finishes with whole records;
#   - mpirun alone killed with SIGKILL at random moments (its ranks orphaned) and the job
#     resumed at once, 20 times: orphans end by themselves, every prompt is answered exactly
#     once, every line is a whole record, no custom_id twice;
#   - a resume under memory limits: each run either fails with a message leaving the file
#     byte for byte as it was, or keeps every record (at least one limit must fail);
#   - --out that is not a regular file (/dev/full, a FIFO, /dev/stdout, a directory) and
#     --out equal to --prompts are refused without hanging; a prompt file that cannot be read
#     whole (/dev/zero, a directory) is refused before anything is written;
#   - --resume with another prompt file or model is refused, file unchanged; --force-resume runs.
# Usage: results_integrity_test.sh RANKLM FIXTURES
set -u
bin="$1"; fixtures="$2"
source "$(dirname "$0")/shell_lib.sh"
model="$fixtures/models/tiny-llama-q8_0.gguf"
other_model="$fixtures/models/tiny-llama-q4_0.gguf"
for i in $(seq 1 150); do echo "Prompt $i: tell me about rivers, $((i * 7919 % 1000)) mountains and code"; done > "$tmp/p.txt"
run=(run -m "$model" -n 12 --temp 0.8 --seed 5 -t 1 --parallel 4 --progress none)

check_whole() {  # results file, prompt count: whole records, each custom_id once, all answered
  python3 - "$1" "$2" <<'PY'
import json, sys
raw = open(sys.argv[1]).read()
assert raw.endswith("\n"), "the file does not end with a whole record"
ids = [json.loads(l)["custom_id"] for l in raw.splitlines()]
assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} custom_ids twice"
assert len(ids) == int(sys.argv[2]), f"{len(ids)} records for {sys.argv[2]} prompts"
PY
}

# --- two jobs on one results file ------------------------------------------------------------
"$bin" "${run[@]}" -f "$tmp/p.txt" -o "$tmp/two.jsonl" 2> "$tmp/err1" &
first=$!
for _ in $(seq 1 100); do grep -q "pid $first " "$tmp/two.jsonl.lock" 2> /dev/null && break; sleep 0.05; done
t0=$(date +%s%N)
"$bin" "${run[@]}" -f "$tmp/p.txt" -o "$tmp/two.jsonl" --resume 2> "$tmp/err2"; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
wait "$first"; rc1=$?
if [ "$rc" = 1 ] && grep -q "another job is writing these results (host $(hostname) pid $first " "$tmp/err2" \
   && [ "$rc1" = 0 ] && check_whole "$tmp/two.jsonl" 150; then
  ok "a second job on the same --out refused in $ms ms naming host and pid; the first finished whole"
else
  bad "second job: rc $rc, first rc $rc1"; cat "$tmp/err2"
fi
rm -f "$tmp/two.jsonl" "$tmp/two.jsonl.lock"
"$bin" "${run[@]}" -f "$tmp/p.txt" -o "$tmp/two.jsonl" 2> /dev/null &
first=$!
for _ in $(seq 1 100); do grep -q "pid $first " "$tmp/two.jsonl.lock" 2> /dev/null && break; sleep 0.05; done
"$bin" "${run[@]}" -f "$tmp/p.txt" -o "$tmp/two.jsonl" --resume --wait-lock 2> "$tmp/err2"; rc=$?
wait "$first"; rc1=$?
if [ "$rc" = 0 ] && [ "$rc1" = 0 ] && grep -q "waiting for the job that holds it (host $(hostname) pid $first " "$tmp/err2" \
   && check_whole "$tmp/two.jsonl" 150; then
  ok "--wait-lock waits for the first job, then finds everything answered"
else
  bad "--wait-lock: rc $rc, first rc $rc1"; cat "$tmp/err2"
fi

# --- mpirun killed with SIGKILL, resumed at once, 20 times ----------------------------------
# mpirun alone is killed: its rank is orphaned mid-job and must end by itself (its launcher is
# gone) while the resumed job waits for the results file's lock.
out="$tmp/killed.jsonl"
for i in $(seq 1 400); do echo "Request $i: a story of $((i * 104729 % 997)) rivers"; done > "$tmp/long.txt"
long=(run -m "$model" -n 16 --temp 0.8 --seed 5 -t 1 --parallel 4 --progress none -f "$tmp/long.txt")
"$bin" "${long[@]}" -o "$tmp/full.jsonl" 2> /dev/null
after=(); orphan_ms=()
alive() { [ -e "/proc/$1/status" ] && ! grep -q "^State:.*zombie" "/proc/$1/status" 2> /dev/null; }  # an exited orphan may wait as a zombie to be reaped
for trial in $(seq 1 20); do
  delay=$(python3 -c "import random; print(round(random.uniform(0.3, 1.2), 2))")
  "${mpi[@]}" -np 1 "$bin" "${long[@]}" -o "$out" --resume --wait-lock > /dev/null 2>> "$tmp/kerr" &
  pid=$!
  sleep "$delay"
  orphan=$(pgrep -P "$pid" -f ranklm | head -1)
  kill -KILL "$pid" 2> /dev/null
  wait "$pid" 2> /dev/null
  t0=$(date +%s%N)
  if [ -n "$orphan" ]; then
    for _ in $(seq 1 100); do alive "$orphan" || break; sleep 0.02; done
    alive "$orphan" && orphan_ms+=("alive") || orphan_ms+=("$(( ($(date +%s%N) - t0) / 1000000 ))")
  fi
  after+=("$( [ -f "$out" ] && wc -l < "$out" || echo 0)")
done
timeout 120 "${mpi[@]}" -np 1 "$bin" "${long[@]}" -o "$out" --resume --wait-lock > /dev/null 2>> "$tmp/kerr"
if check_whole "$out" 400 && [[ " ${orphan_ms[*]} " != *" alive "* ]] && python3 - "$tmp/full.jsonl" "$out" <<'PY'
import json, sys
text = lambda p: {json.loads(l)["custom_id"]: json.loads(l)["response"]["body"]["choices"][0]["text"] for l in open(p)}
a, b = text(sys.argv[1]), text(sys.argv[2])
assert a == b, "texts differ from an uninterrupted run"
PY
then
  ok "20 SIGKILLs of mpirun, each resumed at once: every prompt once, whole records, same texts (records after each kill: ${after[*]}); orphaned rank gone after (ms): ${orphan_ms[*]}"
else
  bad "kill mpirun and resume (records after each kill: ${after[*]}; orphan ms: ${orphan_ms[*]})"; tail -5 "$tmp/kerr"
fi

# --- a resume under memory limits -------------------------------------------------------------
python3 - "$tmp/big.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(1, 151):
        f.write(json.dumps({"id": f"batch_req_{i}", "custom_id": str(i), "response": {"status_code": 200, "body": {"choices": [{"text": "done"}]}}}) + "\n")
    for i in range(120000):
        f.write(json.dumps({"id": f"batch_req_x{i}", "custom_id": f"x{i}", "response": {"status_code": 200, "body": {"choices": [{"text": "lorem ipsum " * 30}]}}}) + "\n")
    f.write('{"id": "batch_req_torn", "custom_id": "to')
PY
failed=0; broken=0; seen=""
for kb in 100000 140000 180000 220000 260000 400000; do
  cp "$tmp/big.jsonl" "$tmp/mem.jsonl"; rm -f "$tmp/mem.jsonl.job.json"
  (ulimit -v "$kb"; timeout 120 "$bin" "${run[@]}" -f "$tmp/p.txt" -o "$tmp/mem.jsonl" --resume 2> "$tmp/merr" > /dev/null); rc=$?
  if [ "$rc" != 0 ]; then
    failed=$((failed + 1))
    if ! cmp -s "$tmp/big.jsonl" "$tmp/mem.jsonl" || ! grep -q "ranklm run: " "$tmp/merr" || [ "$rc" -ge 124 ]; then
      broken=$((broken + 1)); echo "  ulimit -v $kb: rc $rc, file changed or no message:"; tail -2 "$tmp/merr"
    fi
  else
    # It could read everything: only the torn tail was cut.
    keep=$(python3 -c "import sys; d = open(sys.argv[1], 'rb').read(); print(d.rfind(b'\n') + 1)" "$tmp/big.jsonl")
    head -c "$keep" "$tmp/big.jsonl" | cmp -s - "$tmp/mem.jsonl" || { broken=$((broken + 1)); echo "  ulimit -v $kb: records lost"; }
  fi
  seen="$seen $kb:$rc"
done
if [ "$failed" -ge 1 ] && [ "$broken" = 0 ]; then
  ok "resume under memory limits (limit:exit$seen): each failure left the file byte for byte, each success kept every record"
else
  bad "resume under memory limits ($seen; $failed failed, $broken broken)"
fi

# --- a prompt file that cannot be read whole ends the job before anything is written ----------
yes "Tell me about the rivers and mountains of a country far away, in detail please." | head -c 300000000 > "$tmp/huge.txt"
(ulimit -v 250000; timeout 120 "$bin" "${run[@]}" -f "$tmp/huge.txt" -o "$tmp/huge.jsonl" > /dev/null 2> "$tmp/err"); rc=$?
if [ "$rc" = 1 ] && grep -q "huge.txt: not enough memory to read the prompt file (300000000 bytes)" "$tmp/err" && [ ! -s "$tmp/huge.jsonl" ]; then
  ok "a 300 MB prompt file under ulimit -v 250000: refused naming the file and its size, nothing written"
else
  bad "prompt file under a memory limit: rc $rc"; cat "$tmp/err"; ls -la "$tmp/huge.jsonl" 2> /dev/null
fi
rm -f "$tmp/huge.txt"

# --- outputs and inputs that are not files ----------------------------------------------------
mkfifo "$tmp/fifo"
refused=1
for o in /dev/full "$tmp/fifo" /dev/stdout "$tmp"; do
  timeout 20 "$bin" "${run[@]}" -f "$tmp/p.txt" -o "$o" > /dev/null 2> "$tmp/err" < /dev/null; rc=$?
  if [ "$rc" != 1 ] || ! grep -q "is not a regular file" "$tmp/err"; then refused=0; echo "  --out $o: rc $rc"; cat "$tmp/err"; fi
done
timeout 20 "$bin" "${run[@]}" -f "$tmp/p.txt" -o "$tmp/p.txt" 2> "$tmp/err"; rc=$?
{ [ "$rc" = 1 ] && grep -q "is the prompt file itself" "$tmp/err"; } || { refused=0; echo "  --out = --prompts: rc $rc"; cat "$tmp/err"; }
for f in /dev/zero "$tmp"; do
  rm -f "$tmp/z.jsonl"
  timeout 20 "$bin" "${run[@]}" -f "$f" -o "$tmp/z.jsonl" 2> "$tmp/err"; rc=$?
  { [ "$rc" = 1 ] && grep -q "the prompt file is" "$tmp/err" && [ ! -e "$tmp/z.jsonl" ]; } || { refused=0; echo "  -f $f: rc $rc"; cat "$tmp/err"; }
done
[ "$refused" = 1 ] && ok "--out /dev/full, a FIFO, /dev/stdout, a directory, the prompt file; -f /dev/zero, a directory: refused at once" \
  || bad "outputs and inputs that are not files"

# --- the same job, or refused -----------------------------------------------------------------
head -c 2000 "$tmp/full.jsonl" > "$tmp/same.jsonl"
cp "$tmp/same.jsonl" "$tmp/before"
"$bin" "${run[@]}" -f "$tmp/p.txt" -o "$tmp/same.jsonl" --resume 2> /dev/null > /dev/null  # finishes it, recording this job
cp "$tmp/same.jsonl" "$tmp/before"
head -n 100 "$tmp/p.txt" > "$tmp/p2.txt"
"$bin" "${run[@]}" -f "$tmp/p2.txt" -o "$tmp/same.jsonl" --resume 2> "$tmp/err"; rc1=$?
"$bin" run -m "$other_model" -n 4 -t 1 --progress none -f "$tmp/p.txt" -o "$tmp/same.jsonl" --resume 2> "$tmp/err2"; rc2=$?
if [ "$rc1" = 1 ] && grep -q "the prompt file differs" "$tmp/err" && [ "$rc2" = 1 ] && grep -q "the model differs" "$tmp/err2" \
   && cmp -s "$tmp/before" "$tmp/same.jsonl" \
   && "$bin" "${run[@]}" -f "$tmp/p2.txt" -o "$tmp/same.jsonl" --resume --force-resume 2> /dev/null > /dev/null; then
  ok "--resume with another prompt file or model refused, file unchanged; --force-resume continues"
else
  bad "job identity: rc $rc1 $rc2"; cat "$tmp/err" "$tmp/err2"
fi

exit $((fails > 0))
