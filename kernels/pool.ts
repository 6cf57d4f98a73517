// Adaptive average pooling over NCHW (PyTorch's windows: output row i averages input rows
// [floor(i·H/OH), ceil((i+1)·H/OH)), likewise for columns; output size 1 is the global average).
// Forward: one invocation per output. Backward: one invocation per input element, gathering the
// gradient of every window that contains it (windows may overlap when H is not a multiple of OH).

import { type Binding, dispatch, grid1D, kernel, linearIndex, WG } from "./runtime.ts";
import { storageDecls } from "./wgsl.ts";

export interface PoolDims {
  /** N·C planes. */
  planes: number;
  h: number;
  w: number;
  oh: number;
  ow: number;
}

export function poolKey(kind: string, d: PoolDims): string {
  return `${kind}:${d.planes}:${d.h}:${d.w}:${d.oh}:${d.ow}`;
}

/** WGSL: the window [start, end) of output `o` over an input axis of `n` with `on` outputs. */
const WINDOW_FNS = `
fn win_start(o: u32, n: u32, on: u32) -> u32 { return (o * n) / on; }
fn win_end(o: u32, n: u32, on: u32) -> u32 { return ((o + 1u) * n + on - 1u) / on; }
`;

export function forwardSource(d: PoolDims): string {
  const total = d.planes * d.oh * d.ow;
  const grid = grid1D(total);
  return `${storageDecls(["x"], ["out"])}
${WINDOW_FNS}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = ${linearIndex(grid)};
  if (i >= ${total}u) { return; }
  let p = i / ${d.oh * d.ow}u;
  let oy = (i / ${d.ow}u) % ${d.oh}u;
  let ox = i % ${d.ow}u;
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
  dispatch(pipe, [x, out], grid1D(total));
}

export function backwardSource(d: PoolDims): string {
  const total = d.planes * d.h * d.w;
  const grid = grid1D(total);
  return `${storageDecls(["g"], ["dx"])}
${WINDOW_FNS}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = ${linearIndex(grid)};
  if (i >= ${total}u) { return; }
  let p = i / ${d.h * d.w}u;
  let y = (i / ${d.w}u) % ${d.h}u;
  let x = i % ${d.w}u;
  let base = p * ${d.oh * d.ow}u;
  var acc = 0.0;
  // the windows that contain row y are oy in [floor(y·OH/H), ceil((y+1)·OH/H)) (columns alike)
  let oy1 = min(((y + 1u) * ${d.oh}u + ${d.h - 1}u) / ${d.h}u, ${d.oh}u);
  let ox1 = min(((x + 1u) * ${d.ow}u + ${d.w - 1}u) / ${d.w}u, ${d.ow}u);
  for (var oy = (y * ${d.oh}u) / ${d.h}u; oy < oy1; oy++) {
    let y0 = win_start(oy, ${d.h}u, ${d.oh}u);
    let y1 = win_end(oy, ${d.h}u, ${d.oh}u);
    if (y < y0 || y >= y1) { continue; }
    for (var ox = (x * ${d.ow}u) / ${d.w}u; ox < ox1; ox++) {
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
  dispatch(pipe, [g, dx], grid1D(total));
}
