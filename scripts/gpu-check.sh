#!/usr/bin/env bash
# The checks to run on a machine with a real GPU (a Vulkan loader and driver present), in under 8 minutes:
# the test suite, a quick benchmark (JSON) and a one-epoch training of the narrow `final` model. Every
# output goes to one folder, so it can be brought back whole.
#
#   scripts/gpu-check.sh [--deno PATH] [--out DIR] [--data-dir DIR]
#
# --deno PATH     the Deno binary to use (default: `deno` on PATH, else installed with npm)
# --out DIR       where the outputs go (default gpu-check-<date>)
# --data-dir DIR  CIFAR-10's binary files (default: $CIFAR10_DIR, else ../shared/data/cifar-10-batches-bin)
set -uo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

DENO="" OUT="gpu-check-$(date -u +%Y%m%dT%H%M%SZ)" DATA="${CIFAR10_DIR:-../shared/data/cifar-10-batches-bin}"
while [ $# -gt 0 ]; do
  case "$1" in
    --deno) DENO="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --data-dir) DATA="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$DENO" ]; then
  if command -v deno >/dev/null 2>&1; then DENO="$(command -v deno)"
  else
    echo "gpu-check: installing Deno 2 from npm"
    npm install -g deno@2 >/dev/null && DENO="$(command -v deno)" || { echo "gpu-check: no Deno" >&2; exit 1; }
  fi
fi
mkdir -p "$OUT"
export CIFAR10_DIR="$DATA" CONVNEXT_AUTOTUNE_CACHE="$OUT/autotune"
status=0
step() { # step NAME SECONDS COMMAND...: runs with a time limit, logs to $OUT/NAME.log, notes the status
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || status=1
}

{
  echo "date: $(date -u)"
  echo "host: $(uname -a)"
  echo "deno: $("$DENO" --version | head -n 1)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$DENO" eval 'const a = await navigator.gpu?.requestAdapter(); console.log("adapter:", a ? JSON.stringify(a.info) : "none")'
} >"$OUT/summary.txt" 2>&1
cat "$OUT/summary.txt"

step info 60 "$DENO" task info --stage final --plan --json
mv "$OUT/info.log" "$OUT/plan.json"
step test 240 "$DENO" task test
step bench 150 "$DENO" task bench --quick --json --out "$OUT/bench.json"
step train 120 "$DENO" task train --stage final --widths 16,32,64,128 --depths 1,1,3,1 --stem-features 16 \
  --epochs 1 --train-limit 10000 --eval-limit 1000 --protocol clean --seed 1 --out "$OUT/train"
echo "outputs in $OUT" | tee -a "$OUT/summary.txt"
exit $status
