#!/usr/bin/env bash
# Installs what the engine needs on a fresh Debian/Ubuntu machine: Deno (from npm) and, when Deno
# finds no WebGPU adapter, Mesa's software Vulkan driver (lavapipe). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if ! command -v deno >/dev/null 2>&1; then
  echo "setup: installing Deno 2 from npm"
  $SUDO npm install -g deno@2
fi
deno --version | head -n 1

probe='const a = await navigator.gpu?.requestAdapter(); if (!a) Deno.exit(1); console.log("setup: WebGPU adapter:", a.info.description || a.info.vendor);'
# the backends the engine asks wgpu for (kernels/runtime.ts, preferPrimaryBackends)
export DENO_WEBGPU_BACKEND="${DENO_WEBGPU_BACKEND:-vulkan,metal,dx12}"
if ! deno eval "$probe" 2>/dev/null; then
  echo "setup: no WebGPU adapter; installing Mesa's software Vulkan driver (mesa-vulkan-drivers)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  deno eval "$probe" || { echo "setup: still no WebGPU adapter after installing lavapipe" >&2; exit 1; }
fi

# the npm packages deno.json imports (vega, puppeteer-core, tfjs, …): fetched here, saying so, rather than
# silently at the first `deno task`
echo "setup: fetching the npm packages the project imports (deno install; ~15 s the first time)"
deno install --quiet &
pid=$!
seconds=0
while kill -0 "$pid" 2>/dev/null; do
  sleep 1
  seconds=$((seconds + 1))
  if [ $((seconds % 5)) -eq 0 ] && kill -0 "$pid" 2>/dev/null; then echo "setup: still fetching npm packages (${seconds} s)"; fi
done
wait "$pid"
