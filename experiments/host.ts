// The Deno side of the kernel layer's settings: the plan override and autotune switch from flags or
// the environment, and the autotune cache on disk (one JSON file per adapter, WebGPU backend and Deno
// version, like Burn/CubeCL's autotune cache).
//
//   CONVNEXT_PLAN="conv=tiled,matmul=generic"   force kernel variants (see kernels/planner.ts)
//   CONVNEXT_AUTOTUNE=0                         no autotune: the adapter profile's deterministic defaults
//   CONVNEXT_AUTOTUNE_CACHE=DIR                 where winners are kept (default ./data/cache/autotune)
//   CONVNEXT_PROFILE="gemmBlockEdge=16"         change numeric knobs of the adapter profile (kernels/profile.ts)
//   CONVNEXT_TEST_PROFILE="gemmBlockEdge=16"    the same on software adapters only (the test tasks set it)

import { type GPUContext, initGPU as initRuntime, NO_ADAPTER_HELP } from "../kernels/runtime.ts";
import { setPlanOverride } from "../kernels/planner.ts";
import { setBackendHint, setProfileTuning, setTestProfileTuning } from "../kernels/profile.ts";
import { type AutotuneStore, disableAutotune, enableAutotune } from "../kernels/autotune.ts";
import { setReplay } from "../training/step.ts";

/**
 * Unless DENO_WEBGPU_BACKEND is set, limits Deno's wgpu to its primary backends (Vulkan, Metal, D3D12).
 * By default wgpu also initialises its OpenGL backend (on Mesa: EGL and a second llvmpipe screen with
 * threads of its own) in every JS runtime, though the engine always takes the primary adapter; tearing
 * that unused GL instance down when a runtime ends (each `deno test` module is one) corrupted the heap
 * in about 1 of 25 runs of eight small GPU test modules ("corrupted size vs. prev_size in fastbins",
 * exit 134; reproduction: scripts/exit_crash.sh). wgpu reads the variable once, at the first
 * `requestAdapter`. DENO_WEBGPU_BACKEND=gl still selects OpenGL. Returns true when it set the variable.
 */
function preferPrimaryBackends(): boolean {
  const name = "DENO_WEBGPU_BACKEND";
  if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") return false;
  if (Deno.env.get(name) !== undefined) return false;
  Deno.env.set(name, "vulkan,metal,dx12");
  return true;
}

let backendChosen: string | null = null;

/**
 * Deno's `initGPU`: the runtime's, on wgpu's primary backends unless DENO_WEBGPU_BACKEND says otherwise,
 * with the profile knobs of CONVNEXT_PROFILE (and, on a software adapter, of CONVNEXT_TEST_PROFILE).
 */
export async function initGPU(): Promise<GPUContext> {
  if (backendChosen === null) {
    backendChosen = preferPrimaryBackends() ? "auto" : envVar("DENO_WEBGPU_BACKEND") ?? "auto";
  }
  setBackendHint(backendChosen);
  setProfileTuning(envVar("CONVNEXT_PROFILE") ?? null);
  setTestProfileTuning(envVar("CONVNEXT_TEST_PROFILE") ?? null);
  try {
    return await initRuntime();
  } catch (e) {
    if (backendChosen === "auto" && e instanceof Error && e.message === NO_ADAPTER_HELP) {
      throw new Error(
        `${NO_ADAPTER_HELP} (Searched wgpu's Vulkan, Metal and D3D12 backends; DENO_WEBGPU_BACKEND=gl tries OpenGL.)`,
      );
    }
    throw e;
  }
}

/** An environment variable, or undefined when unset or when env access is not granted. */
export function envVar(name: string): string | undefined {
  if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") return undefined;
  return Deno.env.get(name);
}

export interface KernelSettings {
  /** Plan override (a flag); falls back to CONVNEXT_PLAN. */
  plan?: string;
  /** false: no autotune (a flag); falls back to CONVNEXT_AUTOTUNE. */
  autotune?: boolean;
  /** false: every training step eager, no replay (a flag); falls back to CONVNEXT_REPLAY. */
  replay?: boolean;
}

/** The autotune cache file of this adapter, backend and Deno version. */
export function autotuneCachePath(ctx: GPUContext): string {
  const dir = envVar("CONVNEXT_AUTOTUNE_CACHE") || "data/cache/autotune";
  const backend = backendChosen ?? envVar("DENO_WEBGPU_BACKEND") ?? "auto";
  const id = `${ctx.adapterName}-${backend}-deno${Deno.version.deno}`.replace(/[^\w.-]+/g, "_");
  return `${dir}/${id}.json`;
}

/** A store of winners in one JSON file (written atomically; unreadable files are ignored). */
export function fileStore(path: string): AutotuneStore {
  return {
    load() {
      try {
        const rec = JSON.parse(Deno.readTextFileSync(path));
        return rec && typeof rec === "object" ? rec : {};
      } catch {
        return {};
      }
    },
    save(winners) {
      Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")) || ".", { recursive: true });
      const tmp = `${path}.${Deno.pid}.tmp`;
      Deno.writeTextFileSync(tmp, JSON.stringify(winners, null, 1) + "\n");
      Deno.renameSync(tmp, path);
    },
  };
}

/** Applies the plan override and the autotune switch (after `initGPU`). Returns the cache path or null. */
export function applyKernelSettings(ctx: GPUContext, s: KernelSettings = {}): string | null {
  setPlanOverride(s.plan ?? envVar("CONVNEXT_PLAN") ?? null);
  setReplay(s.replay ?? !isOff(envVar("CONVNEXT_REPLAY")));
  const on = s.autotune ?? !isOff(envVar("CONVNEXT_AUTOTUNE"));
  if (!on) {
    disableAutotune();
    return null;
  }
  const path = autotuneCachePath(ctx);
  enableAutotune(fileStore(path));
  return path;
}

/** Whether an environment switch says off. */
const isOff = (v: string | undefined): boolean => v !== undefined && /^(0|false|no|off)$/i.test(v);

/** `initGPU()` followed by `applyKernelSettings`. */
export async function initEngine(
  s: KernelSettings = {},
): Promise<{ ctx: GPUContext; autotuneCache: string | null }> {
  const ctx = await initGPU();
  return { ctx, autotuneCache: applyKernelSettings(ctx, s) };
}
