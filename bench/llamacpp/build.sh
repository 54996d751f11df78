#!/usr/bin/env bash
# Builds llama.cpp (the copy vendored in the llama-cpp-python source package on PyPI) as shared
# libraries, llama-bench, llama-batched-bench and llama-server, then llamacpp_logits, a probe that prints llama.cpp's logits for
# given token ids.
# Everything goes under bench/llamacpp/.cache (gitignored). Takes about 25 minutes on 2 cores.
#   bash bench/llamacpp/build.sh            # fetch, build
#   LLAMACPP_SRC=/path/to/llama.cpp bash bench/llamacpp/build.sh   # use an existing, built tree
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="$here/.cache"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
mkdir -p "$cache"
bdir=""
out="$cache"
if [[ -z "${LLAMACPP_SRC:-}" ]]; then
  src="$cache/llama_cpp_python-$version/vendor/llama.cpp"
  if [[ ! -d "$src" ]]; then
    echo "== fetching llama-cpp-python==$version (source) from PyPI"
    (cd "$cache" && python3 -m pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d . &&
      tar xzf "llama_cpp_python-$version.tar.gz")
  fi
  # No -march=native; the instruction sets are named explicitly. AMX stays off: llama.cpp's AMX
  # path dies with SIGILL here because it never asks the kernel for the AMX tile state.
  # LLAMACPP_AVX512=OFF gives an AVX2-only build (in build-avx2, its programs linked from
  # .cache/avx2) for comparisons at the AVX2 level (RANKLM_ISA=avx2 on the ranklm side).
  avx512="${LLAMACPP_AVX512:-ON}"
  # AVX-VNNI (the VEX form of VPDPBUSD) is a separate feature: many AVX-512 CPUs (AMD Zen 4)
  # lack it, and a build with it dies with SIGILL in the first dot product there.
  avxvnni=OFF
  if grep -qw avx_vnni /proc/cpuinfo; then avxvnni=ON; fi
  bdir="$src/build"
  if [[ "$avx512" == OFF ]]; then bdir="$src/build-avx2"; out="$cache/avx2"; fi
  echo "== building llama.cpp in $bdir (AVX2/FMA/F16C/BMI2, AVX-VNNI=$avxvnni, AVX-512=$avx512, AMX off)"
  cmake -S "$src" -B "$bdir" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON \
    -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI="$avxvnni" \
    -DGGML_AVX512="$avx512" -DGGML_AVX512_VNNI="$avx512" -DGGML_AVX512_VBMI="$avx512" \
    -DGGML_AVX512_BF16="$avx512" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_OPENSSL=OFF > "$cache/cmake.log"
  cmake --build "$bdir" --target llama llama-bench llama-batched-bench llama-server -j "$(nproc)"
else
  src="$LLAMACPP_SRC"
  bdir="$src/build"
fi
mkdir -p "$out"
echo "== compiling $out/llamacpp_logits"
g++ -O2 -std=c++17 "$here/llamacpp_logits.cpp" -I"$src/include" -I"$src/ggml/include" \
  -L"$bdir/bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bdir/bin" -o "$out/llamacpp_logits"
for exe in llama-bench llama-batched-bench llama-server; do ln -sf "$bdir/bin/$exe" "$out/$exe"; done
echo "built $out/llamacpp_logits, llama-bench, llama-batched-bench and llama-server in $out"
