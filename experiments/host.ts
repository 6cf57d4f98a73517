// The Deno side of the kernel layer's settings: the plan override and autotune switch from flags or
// the environment, and the autotune cache on disk (one JSON file per adapter, WebGPU backend and Deno
// version, like Burn/CubeCL's autotune cache).
//
//   CONVNEXT_PLAN="conv=tiled,matmul=generic"   force kernel variants (see kernels/planner.ts)
//   CONVNEXT_AUTOTUNE=0                         no autotune: the adapter profile's deterministic defaults
//   CONVNEXT_AUTOTUNE_CACHE=DIR                 where winners are kept (default ./data/cache/autotune)

import { type GPUContext, initGPU } from "../kernels/runtime.ts";
import { setPlanOverride } from "../kernels/planner.ts";
import { type AutotuneStore, disableAutotune, enableAutotune } from "../kernels/autotune.ts";

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
}

/** The autotune cache file of this adapter, backend and Deno version. */
export function autotuneCachePath(ctx: GPUContext): string {
  const dir = envVar("CONVNEXT_AUTOTUNE_CACHE") || "data/cache/autotune";
  const backend = envVar("DENO_WEBGPU_BACKEND") || "auto";
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
  const env = envVar("CONVNEXT_AUTOTUNE");
  const on = s.autotune ?? !(env !== undefined && /^(0|false|no|off)$/i.test(env));
  if (!on) {
    disableAutotune();
    return null;
  }
  const path = autotuneCachePath(ctx);
  enableAutotune(fileStore(path));
  return path;
}

/** `initGPU()` followed by `applyKernelSettings`. */
export async function initEngine(
  s: KernelSettings = {},
): Promise<{ ctx: GPUContext; autotuneCache: string | null }> {
  const ctx = await initGPU();
  return { ctx, autotuneCache: applyKernelSettings(ctx, s) };
}
