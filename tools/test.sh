#!/usr/bin/env bash
# Sets up (Debian packages), builds Release and an ASan+UBSan configuration, and runs the whole
# test suite with CTest. Used by .ci/run. Needs ../shared/fixtures beside the checkout.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
jobs="$(nproc)"

echo "[test] step 1/4: installing dependencies"
bash tools/setup.sh

echo "[test] step 2/4: building Release in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$jobs"

echo "[test] step 3/4: running all tests (labels: unit, kernels, parity, mpi, slurm)"
ctest --test-dir build --output-on-failure -j"$jobs"

echo "[test] step 4/4: building the ASan+UBSan configuration in build-asan/ and running unit and kernel tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Asan > /dev/null
cmake --build build-asan -j"$jobs" --target ranklm ranklm-synth ranklm-repack test_gguf test_tokenizer test_kernels test_chat test_sampling test_plan test_shard test_placement test_comm test_executor test_batch
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" -L 'unit|kernels'
echo "[test] all tests passed"
