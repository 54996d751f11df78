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
