#!/usr/bin/env bash
# Builds llama.cpp (the copy vendored in the llama-cpp-python source package on PyPI) as shared
# libraries, then llamacpp_logits, a probe that prints llama.cpp's logits for given token ids.
# Everything goes under bench/llamacpp/.cache (gitignored). Takes about 25 minutes on 2 cores.
#   bash bench/llamacpp/build.sh            # fetch, build
#   LLAMACPP_SRC=/path/to/llama.cpp bash bench/llamacpp/build.sh   # use an existing, built tree
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="$here/.cache"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
mkdir -p "$cache"
if [[ -z "${LLAMACPP_SRC:-}" ]]; then
  src="$cache/llama_cpp_python-$version/vendor/llama.cpp"
  if [[ ! -d "$src" ]]; then
    echo "== fetching llama-cpp-python==$version (source) from PyPI"
    (cd "$cache" && python3 -m pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d . &&
      tar xzf "llama_cpp_python-$version.tar.gz")
  fi
  echo "== building llama.cpp in $src/build (AVX2/FMA/F16C, no -march=native)"
  cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX2=ON \
    -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=ON > "$cache/cmake.log"
  cmake --build "$src/build" --target llama -j "$(nproc)"
else
  src="$LLAMACPP_SRC"
fi
echo "== compiling $cache/llamacpp_logits"
g++ -O2 -std=c++17 "$here/llamacpp_logits.cpp" -I"$src/include" -I"$src/ggml/include" \
  -L"$src/build/bin" -lllama -lggml -lggml-base -Wl,-rpath,"$src/build/bin" -o "$cache/llamacpp_logits"
echo "built $cache/llamacpp_logits"
