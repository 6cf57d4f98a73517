// Adaptive average pooling over NCHW (PyTorch's windows: output row i averages input rows
// [floor(i·H/OH), ceil((i+1)·H/OH)), likewise for columns; output size 1 is the global average).
// Forward: one invocation per output. Backward: one invocation per input element, gathering the
// gradient of every window that contains it (windows may overlap when H is not a multiple of OH).
// The pipelines serve every batch: the sizes of a plane are compiled in, the count of invocations (which
// follows the N·C planes) is read from `P`.

import { type Binding, dispatch, FLAT_ARGS, flatIndex, grid1D, kernel, params, WG } from "./runtime.ts";
import { divU, modU, paramsDecl, storageDecls } from "./wgsl.ts";

export interface PoolDims {
  /** N·C planes. */
  planes: number;
  h: number;
  w: number;
  oh: number;
  ow: number;
}

/** The sizes of one plane: what the WGSL depends on. */
type PlaneDims = Omit<PoolDims, "planes">;

export function poolKey(kind: string, d: PlaneDims): string {
  return `${kind}:${d.h}:${d.w}:${d.oh}:${d.ow}`;
}

/** WGSL: the window [start, end) of output `o` over an input axis of `n` with `on` outputs. */
const WINDOW_FNS = `
fn win_start(o: u32, n: u32, on: u32) -> u32 { return (o * n) / on; }
fn win_end(o: u32, n: u32, on: u32) -> u32 { return ((o + 1u) * n + on - 1u) / on; }
`;

export function forwardSource(d: PlaneDims): string {
  return `${storageDecls(["x"], ["out"])}
${paramsDecl(2, ["count"])}
${WINDOW_FNS}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let i = ${flatIndex()};
  if (i >= P.count) { return; }
  let p = ${divU("i", d.oh * d.ow)};
  let oy = ${modU(divU("i", d.ow), d.oh)};
  let ox = ${modU("i", d.ow)};
  let y0 = win_start(oy, ${d.h}u, ${d.oh}u);
  let y1 = win_end(oy, ${d.h}u, ${d.oh}u);
  let x0 = win_start(ox, ${d.w}u, ${d.ow}u);
  let x1 = win_end(ox, ${d.w}u, ${d.ow}u);
  let base = p * ${d.h * d.w}u;
  var acc = 0.0;
  for (var yy = y0; yy < y1; yy++) {
    for (var xx = x0; xx < x1; xx++) { acc += x[base + yy * ${d.w}u + xx]; }
  }
  out[i] = acc / f32((y1 - y0) * (x1 - x0));
}`;
}

export function adaptiveAvgPoolForward(x: Binding, out: Binding, d: PoolDims): void {
  const total = d.planes * d.oh * d.ow;
  if (total === 0) return;
  const pipe = kernel(poolKey("pool", d), "adaptive_avg_pool", () => forwardSource(d));
  dispatch(pipe, [x, out, params(total)], grid1D(total));
}

export function backwardSource(d: PlaneDims): string {
  return `${storageDecls(["g"], ["dx"])}
${paramsDecl(2, ["count"])}
${WINDOW_FNS}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let i = ${flatIndex()};
  if (i >= P.count) { return; }
  let p = ${divU("i", d.h * d.w)};
  let y = ${modU(divU("i", d.w), d.h)};
  let x = ${modU("i", d.w)};
  let base = p * ${d.oh * d.ow}u;
  var acc = 0.0;
  // the windows that contain row y are oy in [floor(y·OH/H), ceil((y+1)·OH/H)) (columns alike)
  let oy1 = min(${divU(`((y + 1u) * ${d.oh}u + ${d.h - 1}u)`, d.h)}, ${d.oh}u);
  let ox1 = min(${divU(`((x + 1u) * ${d.ow}u + ${d.w - 1}u)`, d.w)}, ${d.ow}u);
  for (var oy = ${divU(`(y * ${d.oh}u)`, d.h)}; oy < oy1; oy++) {
    let y0 = win_start(oy, ${d.h}u, ${d.oh}u);
    let y1 = win_end(oy, ${d.h}u, ${d.oh}u);
    if (y < y0 || y >= y1) { continue; }
    for (var ox = ${divU(`(x * ${d.ow}u)`, d.w)}; ox < ox1; ox++) {
      let x0 = win_start(ox, ${d.w}u, ${d.ow}u);
      let x1 = win_end(ox, ${d.w}u, ${d.ow}u);
      if (x < x0 || x >= x1) { continue; }
      acc += g[base + oy * ${d.ow}u + ox] / f32((y1 - y0) * (x1 - x0));
    }
  }
  dx[i] = acc;
}`;
}

export function adaptiveAvgPoolBackward(g: Binding, dx: Binding, d: PoolDims): void {
  const total = d.planes * d.h * d.w;
  if (total === 0) return;
  const pipe = kernel(poolKey("pool_backward", d), "adaptive_avg_pool_backward", () => backwardSource(d));
  dispatch(pipe, [g, dx, params(total)], grid1D(total));
}
