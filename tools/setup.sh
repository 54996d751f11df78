#!/usr/bin/env bash
# Installs every build and test dependency of ranklm from Debian packages.
# Idempotent: skips apt-get when everything is already present.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config python3 python3-venv
  openmpi-bin libopenmpi-dev
  libopenblas-dev
  libhdf5-dev hdf5-tools
  libhwloc-dev hwloc
  libboost-program-options-dev
  libgtest-dev libsimde-dev
  libpcre2-dev
  nlohmann-json3-dev
  libfmt-dev
  libboost-dev curl
  slurmctld slurmd slurm-client munge
  python3-matplotlib
  iproute2 util-linux
  clang libclang-rt-14-dev
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "[setup] all Debian packages present"
else
  echo "[setup] installing Debian packages: ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Python packages of the tests, in .venv (gitignored): the official openai client, which the
# server tests (tests/serve_test.py) speak to ranklm serve with.
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! "$root/.venv/bin/python" -c 'import openai' 2> /dev/null; then
  echo "[setup] creating .venv with the openai client (PyPI)"
  python3 -m venv "$root/.venv"
  "$root/.venv/bin/python" -m pip install -q --disable-pip-version-check "openai==3.57.0"
fi
# lm-evaluation-harness with its API models (no torch): the server tests run a local task
# through its local-completions model (tests/serve_lmeval.py).
if ! "$root/.venv/bin/python" -c 'import lm_eval' 2> /dev/null; then
  echo "[setup] installing lm-evaluation-harness into .venv (PyPI)"
  "$root/.venv/bin/python" -m pip install -q --disable-pip-version-check "lm_eval[api]==0.4.13"
fi

# xgrammar (structured output: JSON schemas to token masks), C++ core from its PyPI source
# package, checked against its SHA-256 and unpacked into .deps/ (gitignored); CMake builds it
# as a static library (cmake/xgrammar.cmake). Not a Debian package.
xgr_version=0.2.9
xgr_dir="$root/.deps/xgrammar-$xgr_version"
if [ ! -f "$xgr_dir/include/xgrammar/xgrammar.h" ]; then
  echo "[setup] fetching xgrammar $xgr_version (PyPI source package)"
  mkdir -p "$root/.deps"
  python3 - "$root/.deps" "$xgr_version" <<'PY'
import hashlib, io, sys, tarfile, urllib.request
dest, version = sys.argv[1], sys.argv[2]
url = ("https://files.pythonhosted.org/packages/3a/2f/"
       "5bf8e8fa6619cff534932f79b0abc81a417d354bc5093252c1a6081d0a93/xgrammar-%s.tar.gz" % version)
want = "87b466bca2475e29bb0323abc62c6c33cbcbcff47e5fb800a3e2099ac9620b90"
data = urllib.request.urlopen(url, timeout=120).read()
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"xgrammar-{version}.tar.gz: SHA-256 {got}, expected {want}")
keep = ("cpp/", "include/", "3rdparty/picojson/", "3rdparty/dlpack/include/", "LICENSE", "NOTICE")
with tarfile.open(fileobj=io.BytesIO(data)) as t:
    members = []
    for m in t.getmembers():
        rel = m.name.split("/", 1)[1] if "/" in m.name else ""
        if (m.isfile() or m.isdir()) and rel.startswith(keep) and ".." not in m.name:
            members.append(m)
    t.extractall(dest, members=members)
PY
fi
