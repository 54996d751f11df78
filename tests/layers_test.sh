#!/usr/bin/env bash
# The layer graph is enforced, not a convention: tools/check_layers.py passes on the tree as it
# is, and a copy of the project with one forbidden include (io including plan, kernels including
# src/, the runtime including model, which it reaches only through plan, a directory that is no
# module) fails to build, naming the file, the line and the modules.
# The size check (tools/check_sizes.py, also part of the build) refuses a function over 120 lines.
#   layers_test.sh REPO BUILD_DIR
set -u
repo="$1"
build="$2"
source "$(dirname "$0")/shell_lib.sh"

if python3 "$repo/tools/check_layers.py" --layers "$build/layers.txt" --root "$repo" 2> "$tmp/err"; then
  ok "the tree as it is keeps to the layer graph"
else
  bad "the tree breaks the layer graph:"; cat "$tmp/err"
fi

# A copy of the sources to break, one way at a time (the checker on the copy).
copy() { rm -rf "$tmp/c"; mkdir -p "$tmp/c"; cp -r "$repo/src" "$repo/kernels" "$tmp/c/"; }
expect_refused() {  # what, pattern
  if python3 "$repo/tools/check_layers.py" --layers "$build/layers.txt" --root "$tmp/c" 2> "$tmp/err"; then
    bad "$1: not refused"
  elif grep -q -- "$2" "$tmp/err"; then
    ok "$1: refused ($(head -1 "$tmp/err" | cut -c1-150))"
  else
    bad "$1: refused without naming it:"; cat "$tmp/err"
  fi
}
copy; sed -i '1a #include "plan/plan.h"' "$tmp/c/src/io/gguf.cpp"
expect_refused "io including a plan header" "src/io/gguf.cpp:2: module 'io' includes 'plan/plan.h' (module 'plan')"
copy; sed -i '1a #include "util/error.h"' "$tmp/c/kernels/ops.cpp"
expect_refused "kernels including src/util" "kernels/ops.cpp:2: kernels include 'util/error.h'"
copy; sed -i '1a #include "backend/cpu.h"' "$tmp/c/src/runtime/executor.h"
expect_refused "the runtime including the CPU backend (above its seam)" "module 'runtime' includes 'backend/cpu.h'"
copy; sed -i '1a #include "comm/comm.h"' "$tmp/c/src/model/model.h"
expect_refused "the model including comm" "module 'model' includes 'comm/comm.h'"
# Only declared direct dependencies: the runtime reaches model only through plan (runtime ->
# plan -> model), so it may not include a model header itself.
copy; sed -i '1a #include "model/model.h"' "$tmp/c/src/runtime/executor.cpp"
expect_refused "the runtime including a model header (model is not its direct dependency)" "module 'runtime' includes 'model/model.h'"
copy; mkdir "$tmp/c/src/extra"; echo '#include "util/error.h"' > "$tmp/c/src/extra/x.cpp"
expect_refused "a directory that is not a module" "directory 'extra' is not a module"

# The size limits: a function of 130 lines is refused, naming it.
copy; { echo 'int long_one() {'; for i in $(seq 1 130); do echo "  int v$i = $i;"; done; echo '  return 0;'; echo '}'; } > "$tmp/c/src/util/long.cpp"
if python3 "$repo/tools/check_sizes.py" "$tmp/c/src" 2> "$tmp/err"; then
  bad "a 133-line function: not refused"
elif grep -q "function 'long_one' has 133 lines, more than 120" "$tmp/err"; then
  ok "a 133-line function: refused by the size check"
else
  bad "a 133-line function: refused without naming it:"; cat "$tmp/err"
fi
if python3 "$repo/tools/check_sizes.py" "$repo/src" "$repo/kernels" "$repo/tools" 2> "$tmp/err"; then
  ok "src/, kernels/ and tools/ keep to the size limits"
else
  bad "src/, kernels/ or tools/ break the size limits:"; cat "$tmp/err"
fi

# The build itself: a copy of the project with io including plan fails at the layer check.
mkdir -p "$tmp/p"
cp -r "$repo/CMakeLists.txt" "$repo/src" "$repo/kernels" "$repo/tools" "$repo/tests" "$tmp/p/"
sed -i '1a #include "plan/plan.h"' "$tmp/p/src/io/gguf.cpp"
if cmake -S "$tmp/p" -B "$tmp/p/build" -DBUILD_TESTING=OFF -DRANKLM_XGRAMMAR_DIR="$repo/.deps/xgrammar-0.2.9" > "$tmp/cfg" 2>&1; then
  if cmake --build "$tmp/p/build" --target ranklm_io > "$tmp/build" 2>&1; then
    bad "building ranklm_io with a forbidden include succeeded"
  elif grep -q "module 'io' includes 'plan/plan.h'" "$tmp/build"; then
    ok "the build of a copy with io including plan fails at the layer check"
  else
    bad "the build failed, but not at the layer check:"; tail -5 "$tmp/build"
  fi
else
  bad "configuring the copy failed:"; tail -5 "$tmp/cfg"
fi
[ "$fails" -eq 0 ]
