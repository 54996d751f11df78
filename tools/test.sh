#!/usr/bin/env bash
# Sets up (Debian packages), builds Release and an ASan+UBSan configuration, and runs the whole
# test suite with CTest; then builds the libFuzzer targets (tests/fuzz) and runs each briefly.
# Used by .ci/run. Needs ../shared/fixtures beside the checkout.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
jobs="$(nproc)"

echo "[test] step 1/5: installing dependencies"
bash tools/setup.sh

echo "[test] step 2/5: building Release in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$jobs"

echo "[test] step 3/5: running all tests (labels: unit, kernels, parity, mpi, slurm, cluster, server)"
ctest --test-dir build --output-on-failure -j"$jobs"

echo "[test] step 4/5: building the ASan+UBSan configuration in build-asan/ and running unit and kernel tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Asan > /dev/null
cmake --build build-asan -j"$jobs" --target ranklm ranklm-synth ranklm-repack damage_gguf test_gguf test_tokenizer test_kernels test_chat test_sampling test_plan test_shard test_placement test_comm test_executor test_protocol test_batch
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" -L 'unit|kernels'
echo "[test] step 5/5: building the libFuzzer targets (clang, ASan+UBSan) in build-fuzz/ and fuzzing each for a bounded time"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRANKLM_FUZZ=ON > /dev/null
cmake --build build-fuzz -j"$jobs" --target fuzz_all
ctest --test-dir build-fuzz --output-on-failure -j"$jobs" -L fuzz
echo "[test] all tests passed"
