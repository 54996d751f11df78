#!/usr/bin/env bash
# ranklm-repack under mpirun: each process writes its own rank's shard, and the manifest ends
# complete. Usage: repack_mpi_test.sh RANKLM RANKLM_REPACK FIXTURES_DIR
set -u
bin="$1"; repack="$2"; fixtures="$3"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
m="$fixtures/models/tiny-llama-q8_0.gguf"
"$bin" plan -m "$m" -n 3 --pp 3 -o "$tmp/p.json" > /dev/null || exit 1
mpirun --oversubscribe --allow-run-as-root -np 3 "$repack" -m "$m" --plan "$tmp/p.json" -o "$tmp/s" \
  > "$tmp/out" 2>&1 || { cat "$tmp/out"; exit 1; }
for r in 0 1 2; do
  [ -s "$tmp/s/rank-0000$r.h5" ] || { echo "FAIL: rank $r shard missing"; exit 1; }
  grep -q "rank $r: " "$tmp/out" || { echo "FAIL: rank $r reported nothing"; cat "$tmp/out"; exit 1; }
done
grep -q '"complete": true' "$tmp/s/manifest.json" || { echo "FAIL: manifest not complete"; cat "$tmp/s/manifest.json"; exit 1; }
if ls "$tmp/s" | grep -q partial; then echo "FAIL: partial files left"; exit 1; fi
echo "ok   mpirun -np 3 ranklm-repack: one shard per process, complete manifest"
# A rank listed twice would mean two writers racing on one shard: refused as a bad option.
"$repack" -m "$m" --plan "$tmp/p.json" -o "$tmp/s2" --ranks 0,0 > /dev/null 2> "$tmp/err"; rc=$?
if [ "$rc" = 2 ] && grep -q "rank 0 is listed twice" "$tmp/err" && [ ! -e "$tmp/s2/rank-00000.h5" ]; then
  echo "ok   --ranks 0,0 refused (exit 2) before writing"
else
  echo "FAIL: --ranks 0,0: exit $rc"; cat "$tmp/err"; exit 1
fi
# A plan nested 100000 deep: an error naming the file, not a crash.
python3 -c "print('[' * 100000)" > "$tmp/deep.json"
"$repack" -m "$m" --plan "$tmp/deep.json" -o "$tmp/s3" > /dev/null 2> "$tmp/err"; rc=$?
if [ "$rc" = 1 ] && grep -q "deep.json: JSON nested deeper than 64 levels" "$tmp/err"; then
  echo "ok   a plan nested 100000 deep: refused naming the file"
else
  echo "FAIL: deep plan: exit $rc"; cat "$tmp/err"; exit 1
fi
