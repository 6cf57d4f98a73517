#!/usr/bin/env bash
# Reproduction of the crash at exit of `deno test` (glibc "corrupted size vs. prev_size in fastbins" or
# "double free or corruption", exit status 134, after "N passed | 0 failed"): runs `deno test` RUNS times
# (default 20) over eight tiny test modules that each initialise WebGPU, run a few matmuls and leave some
# in flight, and prints each failure and a count. Extra arguments go to the environment of every run:
# `scripts/exit_crash.sh 100 DENO_WEBGPU_BACKEND=vulkan,gl` brings back the OpenGL backend (Deno's default
# before the fix) and with it the crash.
#
# The cause (see preferPrimaryBackends in kernels/runtime.ts): Deno's wgpu initialises its OpenGL backend
# (EGL, a second llvmpipe screen) in every test module's runtime beside the Vulkan adapter the engine
# uses, and tearing it down corrupts the heap now and then. With only the primary backends it does not.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
runs="${1:-20}"
shift || true
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
for i in 1 2 3 4 5 6 7 8; do
  cat >"$dir/m${i}_test.ts" <<EOF
import { flush, initGPU, matmul, randn, Rng, scope } from "file://$root/mod.ts";
await initGPU();
Deno.test("module $i: kernels, some left in flight", async () => {
  const r = new Rng($i);
  const a = randn([256, 256], r), b = randn([256, 256], r);
  await matmul(a, b).toArray();
  for (let k = 0; k < 4; k++) scope(() => void matmul(a, b));
  flush();
});
EOF
done
clean=0 crashed=0
for n in $(seq 1 "$runs"); do
  env "$@" deno test --allow-all --no-check "$dir" >"$dir/out.txt" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    clean=$((clean + 1))
  else
    crashed=$((crashed + 1))
    echo "run $n: exit $rc: $(grep -a -E 'corrupt|double free|passed' "$dir/out.txt" | tail -2 | tr '\n' ' ')"
  fi
done
echo "$runs runs: $clean exit 0, $crashed failed"
[ "$crashed" -eq 0 ]
