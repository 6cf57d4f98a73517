#!/usr/bin/env bash
# The checks to run on a machine with a real GPU, in under 8 minutes, every output in one folder so it
# can be brought back whole: the adapter and its limits, the kernel plan, the test suite under the GPU
# profile (tests that need CIFAR-10 skip, saying why), `bench --quick --json` plus the training-step
# rows at batch 64, PyTorch CUDA on the same steps (where `import torch` works), and one epoch of
# training on synthetic CIFAR-shaped data.
#
#   scripts/gpu-check.sh [--bundle DIR] [--out DIR] [--allow-software]
#
# --bundle DIR      what scripts/device-bundle.sh made (default device-bundle/ when present): Deno, the
#                   npm packages and the Vulkan loader for a machine with no network; without one, the
#                   `deno` on PATH and the system's Vulkan loader are used
# --out DIR         where the outputs go (default gpu-check-<date>)
# --allow-software  go on when the adapter is a software one (to prove the bundle on a machine without
#                   a GPU); every check then shrinks to fit the budget on a CPU adapter: a smoke subset
#                   of the suite, a filtered quick bench, the narrow step at batch 16, 1,000 images
set -uo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
T_START=$SECONDS

BUNDLE="" OUT="gpu-check-$(date -u +%Y%m%dT%H%M%SZ)" SOFTWARE_OK=0
[ -d device-bundle ] && BUNDLE=device-bundle
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --allow-software) SOFTWARE_OK=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
note() { echo "gpu-check: $*" | tee -a "$SUMMARY"; }

# ---------------------------------------------------------------- unpack the bundle
DENO=deno
if [ -n "$BUNDLE" ]; then
  RUN="$OUT/.bundle" # unpacked beside the outputs, removed at the end
  mkdir -p "$RUN"
  unxz() { if command -v xz >/dev/null; then xz -dc "$1"; else python3 -c 'import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; fi; }
  unxz "$BUNDLE/deno.xz" >"$RUN/deno" && chmod +x "$RUN/deno"
  unxz "$BUNDLE/deno_dir.tar.xz" | tar -C "$RUN" -xf -
  DENO="$RUN/deno"
  export DENO_DIR="$RUN/deno_dir"
  deb=$(ls "$BUNDLE"/libvulkan1_*.deb 2>/dev/null | head -n 1)
  if [ -n "$deb" ]; then
    if command -v dpkg >/dev/null; then dpkg -x "$deb" "$RUN/vk"
    else (mkdir -p "$RUN/vk" && cd "$RUN/vk" && ar x "$(realpath "$deb")" && tar -xf data.tar.*); fi
    export LD_LIBRARY_PATH="$(dirname "$(find "$RUN/vk" -name 'libvulkan.so.1' | head -n 1)")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  note "bundle $BUNDLE unpacked ($(cat "$BUNDLE/VERSION" 2>/dev/null | tr '\n' ' '))"
fi
export PATH="$(dirname "$(command -v "$DENO")"):$PATH" DENO_NO_UPDATE_CHECK=1
# the Vulkan loader looks for drivers in /usr/share and /etc; NVIDIA's container runtime puts its ICD
# elsewhere
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
  for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/nvidia/nvidia_icd.json; do
    [ -f "$f" ] && export VK_DRIVER_FILES="$f" && break
  done
fi
export CONVNEXT_AUTOTUNE_CACHE="$OUT/autotune" DENO_WEBGPU_BACKEND="${DENO_WEBGPU_BACKEND:-vulkan}"

status=0
step() { # step NAME SECONDS COMMAND...: runs with a time limit, logs to $OUT/NAME.log, notes the status
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  timeout -k 20 "$limit" "$@" >"${STDOUT:-$OUT/$name.log}" 2>>"$OUT/$name.log"
  local rc=$?
  note "$name: exit $rc in $((SECONDS - t0)) s$([ $rc -eq 124 ] && echo " (timed out at $limit s)")"
  [ $rc -eq 0 ] || status=1
  return $rc
}

# ---------------------------------------------------------------- the adapter
{
  echo "date: $(date -u)"
  echo "host: $(uname -srm), $(nproc) cores"
  echo "deno: $("$DENO" --version | head -n 1)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-} LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
} >>"$SUMMARY" 2>&1
probe='const a = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
if (!a) { console.log(JSON.stringify({ adapter: null })); Deno.exit(1); }
const limits = {}; for (const k in a.limits) limits[k] = a.limits[k];
const { vendor, architecture, device, description, isFallbackAdapter } = a.info; // getters: not spreadable
console.log(JSON.stringify({ info: { vendor, architecture, device, description, isFallbackAdapter }, features: [...a.features], limits }, null, 1));'
"$DENO" eval "$probe" >"$OUT/adapter.json" 2>"$OUT/adapter.log"
if [ $? -ne 0 ]; then note "no WebGPU adapter (see adapter.log)"; exit 1; fi
desc=$("$DENO" eval 'const j = JSON.parse(Deno.readTextFileSync(Deno.args[0])); console.log(`${j.info.vendor} ${j.info.architecture} ${j.info.device} ${j.info.description}`.trim())' "$OUT/adapter.json")
note "adapter: $desc"
SOFTWARE=0
if grep -q '"isFallbackAdapter": true' "$OUT/adapter.json" || echo "$desc" | grep -qiE 'llvmpipe|lavapipe|swiftshader'; then
  SOFTWARE=1
  if [ $SOFTWARE_OK -eq 0 ]; then
    note "the adapter is a software one, not the GPU (no Vulkan driver for it found?); --allow-software to go on"
    exit 1
  fi
fi

# ---------------------------------------------------------------- the checks
STEP_BATCH=64
if [ $SOFTWARE -eq 1 ]; then
  STEP_BATCH=16
  # llvmpipe compiles 16×16 register blocks several times faster than the profile's 32×32 (as the tests)
  export CONVNEXT_PROFILE="${CONVNEXT_PROFILE:-gemmBlockEdge=16}"
fi
STDOUT="$OUT/plan.json" step plan 60 "$DENO" task info --stage final --plan --json
if [ $SOFTWARE -eq 1 ]; then
  smoke=(tests/layers_test.ts tests/runtime_test.ts tests/profile_test.ts tests/data_test.ts tests/train_test.ts)
  step test 240 "$DENO" task test "${smoke[@]}"
else
  step test 270 "$DENO" task test
fi
if [ $SOFTWARE -eq 1 ]; then
  step bench 120 "$DENO" task bench --quick --only kernels --filter "groupNorm|dwconv 7×7 128" --json \
    --out "$OUT/bench.json"
  step steps 120 "$DENO" task bench --only steps --quick --json --out "$OUT/steps.json"
else
  step bench 90 "$DENO" task bench --quick --json --out "$OUT/bench.json"
  step steps 90 "$DENO" task bench --only steps --steps final --step-batch "$STEP_BATCH" --runs 3 --json \
    --out "$OUT/steps.json"
fi
PY=$(command -v python3 || true)
if [ -n "$PY" ] && "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  req="{\"device\": \"cuda\", \"cases\": [
    {\"name\": \"final narrow\", \"stage\": \"final\", \"batch\": $STEP_BATCH, \"widths\": [16, 32, 64, 128],
     \"depths\": [1, 1, 3, 1], \"stemFeatures\": 16, \"softmaxHead\": false, \"warmup\": 3, \"runs\": 10},
    {\"name\": \"final\", \"stage\": \"final\", \"batch\": $STEP_BATCH, \"softmaxHead\": false, \"warmup\": 3, \"runs\": 10}]}"
  STDOUT="$OUT/torch.json" step torch 60 "$PY" scripts/torch_bench.py "$req"
else
  note "torch: skipped (no python3 with a CUDA torch here)"
fi
IMAGES=10000
[ $SOFTWARE -eq 1 ] && IMAGES=1000
step train 150 "$DENO" task train --synthetic --stage final --widths 16,32,64,128 --depths 1,1,3,1 \
  --stem-features 16 --epochs 1 --train-limit $IMAGES --eval-limit $((IMAGES / 10)) --protocol clean \
  --seed 1 --no-autotune --out "$OUT/train"

rm -rf "$OUT/.bundle"
note "done in $((SECONDS - T_START)) s; outputs in $OUT"
exit $status
