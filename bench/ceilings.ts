// The adapter's ceilings, measured: an FMA-bound micro-kernel (GFLOP/s) and a copy kernel (GB/s).
// Every kernel figure is then shown as a fraction of the roofline min(peak, intensity × bandwidth).

import {
  acquireBuffer,
  clear,
  currentEncoder,
  dispatch,
  gpu,
  kernel,
  releaseBuffer,
} from "../kernels/runtime.ts";
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

/**
 * WGSL of an FMA-bound kernel: `chains` independent accumulators of `type` (f32 or vec4<f32>), the
 * loop body unrolled `unroll` times, `iters` iterations. A big body matters on llvmpipe: each loop
 * iteration carries execution-mask bookkeeping, so 8 vec4 FMAs per iteration measured the loop
 * (24 GFLOP/s) where 512 lane-FMAs per iteration reach the CPU's FMA peak (68-71 GFLOP/s on 2 Zen 1
 * cores, whose FMA units peak at 64-80 by clock).
 */
function fmaKernel(
  wg: number,
  type: "f32" | "vec4<f32>",
  chains: number,
  unroll: number,
  iters: number,
): string {
  const accs = Array.from({ length: chains }, (_, i) => i);
  const v = (x: string) => type === "f32" ? x : `vec4<f32>(${x})`;
  const step = accs.map((i) => `    a${i} = fma(a${i}, m, c);`).join("\n");
  return `@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let seed = f32(gid.x) * 1e-9;
  let m = ${type === "f32" ? "0.999999" : "vec4<f32>(0.999999, 1.000001, 0.9999995, 1.0000005)"};
  let c = ${v("seed + 1e-7")};
${accs.map((i) => `  var a${i} = ${v(`${i}.0 + seed`)};`).join("\n")}
  for (var i = 0u; i < ${iters}u; i++) {
${Array.from({ length: unroll }, () => step).join("\n")}
  }
  out[gid.x] = vec4<f32>(${accs.map((i) => `a${i}`).join(" + ")});
}`;
}

/** FMA kernel variants: [type, chains, unroll]; the best one is the peak. */
const FMA_VARIANTS: ["f32" | "vec4<f32>", number, number][] = [["f32", 8, 64], ["vec4<f32>", 2, 64]];
/** Lane-FMAs per invocation (a dispatch of 65536 invocations is 4.3 GFLOP, ~60 ms at the peak). */
const FMA_PER_INVOCATION = 32768;

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
  /** Also measure the cost of a load by memory path (default true). */
  loadPaths?: boolean;
}

/** Measures the FMA peak (best of a few variants) and the copy bandwidth. */
export async function measureCeilings(opts: CeilingOptions = {}): Promise<Ceilings> {
  const { fmaInvocations = 65536, copyMiB = 64, timing = {} } = opts;
  const detail: Ceilings["detail"] = [];
  const wg = 64;
  const out = acquireBuffer(fmaInvocations * 16);
  let best = 0;
  for (const [type, chains, unroll] of FMA_VARIANTS) {
    const lanes = type === "f32" ? 1 : 4;
    const iters = FMA_PER_INVOCATION / (chains * lanes * unroll);
    const p = kernel(
      `ceiling_fma:${wg}:${type}:${chains}:${unroll}:${iters}`,
      "ceiling_fma",
      () => fmaKernel(wg, type, chains, unroll, iters),
    );
    // extra warm-up: the first long dispatches of a run measure the CPU ramping up, not the peak
    const s = await measure(() => dispatch(p, [out], [fmaInvocations / wg]), {
      runs: 5,
      warmup: 3,
      ...timing,
    });
    const g = (fmaInvocations * FMA_PER_INVOCATION * 2) / (s.medianMs * 1e6);
    const name = `fma ${chains} ${type === "f32" ? "f32" : "vec4"} chains ×${unroll} unrolled`;
    detail.push({ name, value: g, unit: "GFLOP/s", stats: s });
    best = Math.max(best, g);
  }
  releaseBuffer(out);

  const bytes = copyMiB * 1024 * 1024, n4 = bytes / 16;
  const src = acquireBuffer(bytes), dst = acquireBuffer(bytes);
  clear(src);
  const cwg = 256, groups = Math.ceil(n4 / cwg);
  const gx = Math.min(groups, 32768), gy = Math.ceil(groups / gx);
  const cp = kernel(`ceiling_copy:${cwg}:${n4}`, "ceiling_copy", () => copyKernel(cwg, n4));
  const cs = await measure(() => dispatch(cp, [src, dst], [gx, gy]), { runs: 5, ...timing });
  const gbs = (2 * bytes) / (cs.medianMs * 1e6);
  detail.push({ name: `copy ${copyMiB} MiB (vec4)`, value: gbs, unit: "GB/s", stats: cs });
  releaseBuffer(src);
  releaseBuffer(dst);
  if (opts.loadPaths !== false) detail.push(...await measureLoadPaths(timing));
  return { fmaGflops: best, copyGBs: gbs, ridge: best / gbs, detail };
}

// ---------------------------------------------------------------- load paths

const LP_INV = 4096, LP_IT = 32, LP_L = 8;

/** WGSL that reads through one memory path: `decl` declares A, `load` is one load (R = 0..LP_L-1). */
function loadPathKernel(decl: string, load: string): string {
  const loads = Array.from({ length: LP_L }, (_, r) => `    acc += ${load.replaceAll("R", `${r}u`)};`);
  return `${decl}
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wid: vec3<u32>) {
  let i = gid.x;
  var acc = vec4<f32>(0.0);
  for (var it = 0u; it < ${LP_IT}u; it++) {
${loads.join("\n")}
  }
  out[i] = acc;
}`;
}

/**
 * What one load costs on this adapter, by memory path (ns per float per invocation; lower is better):
 * storage buffers, uniform buffers, sampled textures and workgroup memory, each read inside a loop
 * with per-invocation ("per-lane") or workgroup-uniform addresses. On lavapipe (Mesa 22.3) these
 * differ by 20×, which decides how kernels should read their operands there.
 */
export async function measureLoadPaths(timing: MeasureOptions = {}): Promise<Ceilings["detail"]> {
  const { device } = gpu();
  const out = acquireBuffer(LP_INV * 16);
  const sbuf = acquireBuffer(66048 * 16);
  clear(sbuf);
  const ubo = device.createBuffer({ size: 65536, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const tex = device.createTexture({
    size: [1024, 256],
    format: "rgba32float",
    usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
  });
  const SS = "@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;";
  const SF = "@group(0) @binding(0) var<storage, read> A: array<f32>;";
  const UB = "@group(0) @binding(0) var<uniform> A: array<vec4<f32>, 4096>;";
  const TX = "@group(0) @binding(0) var A: texture_2d<f32>;";
  const WG = "var<workgroup> A: array<vec4<f32>, 512>;";
  const cases: {
    name: string;
    decl: string;
    load: string;
    floats: number;
    res: GPUBindingResource | null;
  }[] = [
    {
      name: "storage vec4, per-lane",
      decl: SS,
      load: "A[(i & 4095u) * 16u + it * 8u + R]",
      floats: 4,
      res: { buffer: sbuf },
    },
    {
      name: "storage f32, per-lane",
      decl: SF,
      load: "vec4<f32>(A[(i & 4095u) * 16u + it * 8u + R])",
      floats: 1,
      res: { buffer: sbuf },
    },
    {
      name: "storage vec4, uniform",
      decl: SS,
      load: "A[(wid.x & 255u) * 16u + it * 8u + R]",
      floats: 4,
      res: { buffer: sbuf },
    },
    {
      name: "uniform vec4, uniform",
      decl: UB,
      load: "A[(it * 8u + R) & 4095u]",
      floats: 4,
      res: { buffer: ubo },
    },
    {
      name: "uniform vec4, per-lane",
      decl: UB,
      load: "A[(i * 7u + it * 8u + R) & 4095u]",
      floats: 4,
      res: { buffer: ubo },
    },
    {
      name: "texture rgba32f, per-lane",
      decl: TX,
      load: "textureLoad(A, vec2<u32>((it * 8u + R) & 1023u, i & 255u), 0)",
      floats: 4,
      res: tex.createView(),
    },
    {
      name: "workgroup vec4, per-lane",
      decl: WG,
      load: "A[(li * 8u + it + R) & 511u]",
      floats: 4,
      res: null,
    },
  ];
  const rows: Ceilings["detail"] = [];
  for (const c of cases) {
    const pipe = kernel(`load:${c.name}`, `load_${c.name}`, () => loadPathKernel(c.decl, c.load));
    const entries: GPUBindGroupEntry[] = [{ binding: 1, resource: { buffer: out } }];
    if (c.res) entries.push({ binding: 0, resource: c.res });
    const bind = device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries });
    const run = () => {
      const pass = currentEncoder().beginComputePass({ label: pipe.label });
      pass.setPipeline(pipe);
      pass.setBindGroup(0, bind);
      pass.dispatchWorkgroups(LP_INV / 64);
      pass.end();
    };
    const st = await measure(run, { runs: 3, ...timing });
    const ns = (st.medianMs * 1e6) / (LP_INV * LP_IT * LP_L * c.floats);
    rows.push({ name: `load: ${c.name}`, value: ns, unit: "ns/float/invocation", stats: st });
  }
  releaseBuffer(out);
  releaseBuffer(sbuf);
  ubo.destroy();
  tex.destroy();
  return rows;
}

/** Roofline bound (GFLOP/s) of a kernel with `flops` and `bytes` of compulsory traffic. */
export function roofline(c: Ceilings, flops: number, bytes: number): number {
  if (flops <= 0) return 0;
  return Math.min(c.fmaGflops, (flops / bytes) * c.copyGBs);
}
