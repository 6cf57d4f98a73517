#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that has no network, no Deno, no npm, no
# CIFAR-10 and no Vulkan loader (only the NVIDIA driver and Python): the Deno binary (xz), a DENO_DIR
# holding every npm package the checks import (xz tarball), and Debian's Vulkan loader (libvulkan1's
# .deb for amd64). No data: the checks train on `--synthetic` images. Run it here, on a machine with
# the registries, then send the folder along with the project (it is ignored by git).
#
#   scripts/device-bundle.sh [--out DIR]     (default device-bundle/; must stay < 60 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=device-bundle
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "device-bundle: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v deno >/dev/null || { echo "device-bundle: needs deno (bash scripts/setup.sh)" >&2; exit 1; }
command -v xz >/dev/null || { echo "device-bundle: needs xz (apt-get install -y xz-utils)" >&2; exit 1; }
[ "$(uname -m)" = x86_64 ] || { echo "device-bundle: the GPU machines are amd64; this is $(uname -m)" >&2; exit 1; }

TMP="$OUT.tmp"
rm -rf "$TMP" && mkdir -p "$TMP" && TMP="$(cd "$TMP" && pwd)"
trap 'rm -rf "$TMP"' EXIT # a failed run leaves nothing half-made (its DENO_DIR holds .ts files)
echo "device-bundle: Deno $(deno --version | head -n 1 | cut -d' ' -f2) (xz, ~30 s)"
xz -T0 -6 -c "$(readlink -f "$(command -v deno)")" >"$TMP/deno.xz"

echo "device-bundle: npm packages into a fresh DENO_DIR"
# everything `deno task test`, `info`, `bench` and `train` load, type-checked as the suite does
entries=(mod.ts experiments/*.ts bench/main.ts tests/*.ts)
DENO_DIR="$TMP/deno_dir" deno cache --quiet "${entries[@]}"
tar -C "$TMP" -cf - deno_dir | xz -T0 -6 >"$TMP/deno_dir.tar.xz"
rm -rf "$TMP/deno_dir"

echo "device-bundle: Debian's Vulkan loader (libvulkan1, amd64)"
(cd "$TMP" && apt-get download -qq libvulkan1:amd64 2>/dev/null ||
  { apt-get update -qq && apt-get download -qq libvulkan1:amd64; })

deno --version | head -n 1 >"$TMP/VERSION"
git rev-parse --short HEAD >>"$TMP/VERSION" 2>/dev/null || true
rm -rf "$OUT" && mv "$TMP" "$OUT"
size=$(du -sm "$OUT" | cut -f1)
ls -l "$OUT"
echo "device-bundle: $OUT is ${size} MiB"
[ "$size" -lt 60 ] || { echo "device-bundle: over the 60 MiB limit" >&2; exit 1; }
