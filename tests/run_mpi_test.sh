#!/usr/bin/env bash
# ranklm run, the batch job, end to end under mpirun on a fixture model:
#   - the same prompts and seed give the same results on one process and on 2 (PP), 2 (TP) and
#     4 (PP 2 x TP 2) ranks;
#   - bad requests (bad JSON, missing fields, wrong types, unknown url, a prompt longer than the
#     context, token ids outside the vocabulary) get error records and the rest runs;
#     an empty file or a results file that already holds results is one clear fatal error that
#     writes nothing; binary garbage gives error records, not a crash;
#   - mpirun killed at random moments (SIGTERM to mpirun, SIGKILL to the whole job, SIGKILL to
#     rank 0 alone, and a torn last line as a kill during a write leaves it) and resumed each
#     time: every prompt answered exactly once, each record whole, the texts those of an
#     uninterrupted run.
# Usage: run_mpi_test.sh RANKLM RANKLM_REPACK FIXTURES
set -u
bin="$1"; repack="$2"; fixtures="$3"
source "$(dirname "$0")/shell_lib.sh"
model="$fixtures/models/tiny-llama-q8_0.gguf"

python3 - "$tmp" <<'PY'
import json, random, sys
t = sys.argv[1]
random.seed(3)
words = "apple river mountain code music ocean planet forest city garden storm light".split()
for name, n in (("p.txt", 120), ("long.txt", 260)):
  with open(f"{t}/{name}", "w") as f:
    for i in range(n):
        f.write(f"Prompt {i}: tell me about the " + " ".join(random.choice(words) for _ in range(random.randint(1, 10))) + "\n")
        if i % 17 == 0:
            f.write("\n")  # blank lines are skipped, numbering follows the file
good = lambda cid, **body: json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/completions", "body": body})
lines = [
    good("ok-1", prompt="Once upon a time", max_tokens=8, seed=1),
    '{"custom_id": "broken", "url": ',
    json.dumps({"url": "/v1/completions", "body": {"prompt": "x"}}),
    json.dumps({"custom_id": "no-body", "url": "/v1/completions"}),
    good("wrong-type", prompt="x", temperature="hot"),
    json.dumps({"custom_id": "wrong-url", "url": "/v1/embeddings", "body": {"input": "x"}}),
    good("too-long", prompt="word " * 200, max_tokens=4),
    good("bad-ids", prompt=[1, 99999999], max_tokens=4),
    good("ok-2", prompt=[1, 45, 99], max_tokens=6, temperature=0, stop=["zzz"]),
    json.dumps({"custom_id": "chat-no-template", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "hi"}]}}),
]
open(f"{t}/r.jsonl", "w").write("\n".join(lines) + "\n")
PY

# --- same results on every layout -----------------------------------------------------------
run_args=(--prompts "$tmp/p.txt" -n 10 --temp 0.9 --seed 11 -t 1 --parallel 4 --progress none)
"$bin" run -m "$model" "${run_args[@]}" --out "$tmp/ref.jsonl" 2> "$tmp/err" || { bad "one-process run"; cat "$tmp/err"; }
same_as_ref() {  # results file: same custom_ids, texts, finish reasons and token counts as ref
  python3 - "$tmp/ref.jsonl" "$1" <<'PY'
import json, sys
def load(p):
    out = {}
    for line in open(p):
        r = json.loads(line)
        b = r["response"]["body"]
        key = r["custom_id"]
        assert key not in out, f"{key} twice in {p}"
        ok = r["response"] is not None and r["response"]["status_code"] == 200
        out[key] = (b["choices"][0]["text"], b["choices"][0]["finish_reason"], b["usage"]) if ok else (r["error"] or b["error"])["code"]
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), f"{len(a)} vs {len(b)} records"
diff = [k for k in a if a[k] != b[k]]
assert not diff, f"{len(diff)} differ, e.g. {diff[0]}: {a[diff[0]]} vs {b[diff[0]]}"
print(len(a))
PY
}
n_ref=$(python3 -c "import sys; print(sum(1 for l in open('$tmp/p.txt') if l.strip()))")
for cfg in "2 2 1" "2 1 2" "4 2 2"; do
  set -- $cfg
  label="$1 ranks (PP $2 x TP $3)"
  "$bin" plan -m "$model" -n "$1" --pp "$2" --tp "$3" -o "$tmp/plan$1$2$3.json" > /dev/null 2>&1
  rm -rf "$tmp/s$1$2$3"; "$repack" -m "$model" --plan "$tmp/plan$1$2$3.json" -o "$tmp/s$1$2$3" 2> /dev/null
  rm -f "$tmp/out.jsonl"
  if timeout 120 "${mpi[@]}" -np "$1" "$bin" run --shards "$tmp/s$1$2$3" "${run_args[@]}" --out "$tmp/out.jsonl" 2> "$tmp/err" \
     && n=$(same_as_ref "$tmp/out.jsonl" 2> "$tmp/cmp") && [ "$n" = "$n_ref" ]; then
    ok "$label: the same $n results as one process"
  else
    bad "$label"; tail -3 "$tmp/err" "$tmp/cmp"
  fi
done

# --- bad requests: error records, the rest runs -----------------------------------------------
if timeout 60 "${mpi[@]}" -np 2 "$bin" run --shards "$tmp/s221" --prompts "$tmp/r.jsonl" --out "$tmp/rr.jsonl" -c 64 -t 1 --progress none 2> "$tmp/err" \
   && python3 - "$tmp/rr.jsonl" <<'PY'
import json, sys
recs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    recs[r["custom_id"]] = r
# Lines that are no request (not JSON, no custom_id, an url that is not served) never reached an
# endpoint: top-level error, no response. Requests the endpoint refuses: a 400, error null.
want_err = {"line-2": "invalid_line", "line-3": "invalid_line", "no-body": "invalid_request", "wrong-type": "invalid_request",
            "wrong-url": "invalid_line", "too-long": "context_length_exceeded", "bad-ids": "invalid_request",
            "chat-no-template": "invalid_request"}
assert set(recs) == set(want_err) | {"ok-1", "ok-2"}, sorted(recs)
for cid, code in want_err.items():
    r = recs[cid]
    if code == "invalid_line":
        assert r["error"]["code"] == code and r["response"] is None, (cid, r)
        e = r["error"]
    else:
        assert r["error"] is None and r["response"]["status_code"] == 400, (cid, r)
        e = r["response"]["body"]["error"]
        assert e["code"] == code, (cid, r)
    assert "r.jsonl: line " in e["message"], e["message"]
    recs[cid] = {"error": e}
for cid in ("ok-1", "ok-2"):
    r = recs[cid]
    assert r["error"] is None and r["response"]["status_code"] == 200, r
    assert r["response"]["body"]["usage"]["completion_tokens"] >= 1
assert "body.temperature must be a number" in recs["wrong-type"]["error"]["message"]
assert "the context holds 64" in recs["too-long"]["error"]["message"], recs["too-long"]["error"]["message"]
PY
then
  ok "8 bad requests of 10: error records naming line and field; the other 2 answered"
else
  bad "bad requests"; tail -3 "$tmp/err"
fi

: > "$tmp/empty.txt"
if ! "$bin" run -m "$model" --prompts "$tmp/empty.txt" --out "$tmp/e.jsonl" 2> "$tmp/err" && grep -q "no prompts (the file is empty)" "$tmp/err" \
   && [ ! -e "$tmp/e.jsonl" ]; then
  ok "empty prompt file: one clear error, no results file"
else
  bad "empty prompt file"; cat "$tmp/err"
fi
cp "$tmp/ref.jsonl" "$tmp/keep.jsonl"
if ! "$bin" run -m "$model" --prompts "$tmp/p.txt" --out "$tmp/keep.jsonl" 2> "$tmp/err" && grep -q "add --resume" "$tmp/err" \
   && cmp -s "$tmp/ref.jsonl" "$tmp/keep.jsonl"; then
  ok "existing results without --resume: refused, file unchanged"
else
  bad "existing results"; cat "$tmp/err"
fi
head -c 20000 /dev/urandom > "$tmp/garbage.jsonl"
cp "$tmp/garbage.jsonl" "$tmp/garbage.txt"
garbage_ok=1
for g in garbage.jsonl garbage.txt; do
  rm -f "$tmp/g.jsonl"
  "$bin" run -m "$model" --prompts "$tmp/$g" --out "$tmp/g.jsonl" -n 4 -t 1 --progress none > /dev/null 2> "$tmp/err"
  rc=$?
  if [ "$rc" -gt 1 ] || ! python3 -c "
import json, sys
for l in open('$tmp/g.jsonl'): r = json.loads(l); assert r['custom_id']
" 2> /dev/null; then
    garbage_ok=0; echo "  $g: exit $rc"; tail -2 "$tmp/err"
  fi
done
[ "$garbage_ok" = 1 ] && ok "binary garbage (.jsonl and .txt): whole records, no crash" || bad "binary garbage"

# --- kill at random moments, resume ----------------------------------------------------------
kill_args=(--shards "$tmp/s221" --prompts "$tmp/long.txt" -n 24 --temp 0.9 --seed 11 -t 1 --parallel 4 --progress none)
"$bin" run -m "$model" --prompts "$tmp/long.txt" -n 24 --temp 0.9 --seed 11 -t 1 --parallel 4 --progress none --out "$tmp/full.jsonl" 2> /dev/null
out="$tmp/killed.jsonl"; rm -f "$out"
kills=0; resumed_from=()
for trial in 1 2 3 4 5 6; do
  delay=$(python3 -c "import random; print(round(random.uniform(0.6, 2.0), 2))")
  setsid "${mpi[@]}" -np 2 "$bin" run "${kill_args[@]}" --out "$out" --resume > /dev/null 2> "$tmp/kerr" &
  pid=$!
  sleep "$delay"
  case $((trial % 3)) in
    0) kill -TERM "$pid" 2> /dev/null ;;                                  # mpirun asked to stop
    1) kill -KILL -- "-$pid" 2> /dev/null ;;                              # the whole job, at once
    2) r0=$(pgrep -f "ranklm run --shards $tmp/s221" | while read -r p; do
              tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=0" && echo "$p"; done | head -1)
       [ -n "$r0" ] && kill -KILL "$r0" ;;                                 # rank 0 alone dies
  esac
  wait "$pid" 2> /dev/null
  pkill -KILL -f "ranklm run --shards $tmp/s221" 2> /dev/null; sleep 0.2
  kills=$((kills + 1))
  resumed_from+=("$( [ -f "$out" ] && wc -l < "$out" || echo 0)")
  # A kill in the middle of a write leaves a torn last line: make one after the third trial.
  if [ "$trial" = 3 ] && [ -s "$out" ]; then printf '{"id": "batch_req_torn", "custom_id": "9' >> "$out"; fi
done
timeout 120 "${mpi[@]}" -np 2 "$bin" run "${kill_args[@]}" --out "$out" --resume > /dev/null 2> "$tmp/kerr"
if python3 - "$tmp/full.jsonl" "$out" "$tmp/long.txt" <<'PY'
import json, sys
full = {json.loads(l)["custom_id"]: json.loads(l) for l in open(sys.argv[1])}
ids, texts = [], {}
raw = open(sys.argv[2]).read()
assert raw.endswith("\n"), "the file does not end with a whole record"
for line in raw.splitlines():
    r = json.loads(line)  # every line a whole record
    ids.append(r["custom_id"])
    texts[r["custom_id"]] = r["response"]["body"]["choices"][0]["text"]
n_prompts = sum(1 for l in open(sys.argv[3]) if l.strip())
assert len(ids) == len(set(ids)) == n_prompts, f"{len(ids)} records, {len(set(ids))} distinct, {n_prompts} prompts"
diff = [k for k in texts if texts[k] != full[k]["response"]["body"]["choices"][0]["text"]]
assert not diff, f"{len(diff)} texts differ from an uninterrupted run, e.g. {diff[0]}"
PY
then
  ok "$kills kills (TERM to mpirun, KILL to the job, KILL to rank 0; a torn line) and resumes: every prompt once, whole records, same texts (records after each kill: ${resumed_from[*]})"
else
  bad "kill and resume (records after each kill: ${resumed_from[*]})"; tail -3 "$tmp/kerr"
fi

exit $((fails > 0))
