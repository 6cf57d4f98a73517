// The adapter's ceilings, measured: an FMA-bound micro-kernel (GFLOP/s) and a copy kernel (GB/s).
// Every kernel figure is then shown as a fraction of the roofline min(peak, intensity × bandwidth).

import { acquireBuffer, clear, dispatch, pipeline, releaseBuffer } from "../kernels/runtime.ts";
import { measure, type MeasureOptions, type Stats } from "./timing.ts";

export interface Ceilings {
  /** Best FMA throughput, GFLOP/s (an FMA counts as 2 FLOPs). */
  fmaGflops: number;
  /** Copy bandwidth, GB/s (bytes read + bytes written). */
  copyGBs: number;
  /** Arithmetic intensity (FLOP/byte) where the roofline turns: fmaGflops / copyGBs. */
  ridge: number;
  detail: { name: string; value: number; unit: string; stats: Stats }[];
}

/** WGSL of an FMA-bound kernel: `chains` independent vec4 accumulators, `iters` FMAs each. */
function fmaKernel(wg: number, chains: number, iters: number): string {
  const accs = Array.from({ length: chains }, (_, i) => i);
  return `@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let seed = f32(gid.x) * 1e-9;
  let m = vec4<f32>(0.999999, 1.000001, 0.9999995, 1.0000005);
  let c = vec4<f32>(seed, 1e-7, 2e-7, 3e-7);
${accs.map((i) => `  var a${i} = vec4<f32>(${i}.0 + seed);`).join("\n")}
  for (var i = 0u; i < ${iters}u; i++) {
${accs.map((i) => `    a${i} = fma(a${i}, m, c);`).join("\n")}
  }
  out[gid.x] = ${accs.map((i) => `a${i}`).join(" + ")};
}`;
}

function copyKernel(wg: number, n4: number): string {
  return `@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * ${wg}u;
  if (i < ${n4}u) { dst[i] = src[i]; }
}`;
}

export interface CeilingOptions {
  /** FMA invocations (default 65536) and copy size in MiB (default 64). */
  fmaInvocations?: number;
  copyMiB?: number;
  timing?: MeasureOptions;
}

/** Measures the FMA peak (best of a few variants) and the copy bandwidth. */
export async function measureCeilings(opts: CeilingOptions = {}): Promise<Ceilings> {
  const { fmaInvocations = 65536, copyMiB = 64, timing = {} } = opts;
  const detail: Ceilings["detail"] = [];
  const wg = 64, iters = 256;
  const out = acquireBuffer(fmaInvocations * 16);
  let best = 0;
  for (const chains of [4, 8]) {
    const p = pipeline("ceiling_fma", fmaKernel(wg, chains, iters));
    const s = await measure(() => dispatch(p, [out], [fmaInvocations / wg]), { runs: 5, ...timing });
    const flops = fmaInvocations * iters * chains * 4 * 2;
    const g = flops / (s.medianMs * 1e6);
    detail.push({ name: `fma ${chains} vec4 chains`, value: g, unit: "GFLOP/s", stats: s });
    best = Math.max(best, g);
  }
  releaseBuffer(out);

  const bytes = copyMiB * 1024 * 1024, n4 = bytes / 16;
  const src = acquireBuffer(bytes), dst = acquireBuffer(bytes);
  clear(src);
  const cwg = 256, groups = Math.ceil(n4 / cwg);
  const gx = Math.min(groups, 32768), gy = Math.ceil(groups / gx);
  const cp = pipeline("ceiling_copy", copyKernel(cwg, n4));
  const cs = await measure(() => dispatch(cp, [src, dst], [gx, gy]), { runs: 5, ...timing });
  const gbs = (2 * bytes) / (cs.medianMs * 1e6);
  detail.push({ name: `copy ${copyMiB} MiB (vec4)`, value: gbs, unit: "GB/s", stats: cs });
  releaseBuffer(src);
  releaseBuffer(dst);
  return { fmaGflops: best, copyGBs: gbs, ridge: best / gbs, detail };
}

/** Roofline bound (GFLOP/s) of a kernel with `flops` and `bytes` of compulsory traffic. */
export function roofline(c: Ceilings, flops: number, bytes: number): number {
  if (flops <= 0) return 0;
  return Math.min(c.fmaGflops, (flops / bytes) * c.copyGBs);
}
