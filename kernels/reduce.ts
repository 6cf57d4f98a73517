// Sum reduction over any set of axes: out[kept coords] = sum over reduced coords of x * scale.
// Few long reductions use one workgroup per output (tree in workgroup memory); otherwise one
// invocation per output loops over its elements.

import { type Binding, dispatch, grid1D, linearIndex, pipeline, WG } from "./runtime.ts";
import { f32, storageDecls, stridesOf } from "./wgsl.ts";

/** WGSL computing the flat offset of coordinate `idx` over `dims` (sizes) with `strides` in memory. */
function offsetExpr(idx: string, dims: number[], strides: number[]): string {
  if (dims.length === 0) return "0u";
  const inner = stridesOf(dims);
  return dims.map((d, k) => {
    const coord = k === 0 ? `(${idx} / ${inner[k]}u)` : `((${idx} / ${inner[k]}u) % ${d}u)`;
    return `${coord} * ${strides[k]}u`;
  }).join(" + ");
}

const WG_REDUCE = 64;

export function sumAxes(
  x: Binding,
  shape: readonly number[],
  axes: readonly number[],
  out: Binding,
  scale = 1,
): void {
  const strides = stridesOf(shape);
  const keptDims: number[] = [],
    keptStrides: number[] = [],
    redDims: number[] = [],
    redStrides: number[] = [];
  shape.forEach((d, k) => {
    if (axes.includes(k)) {
      redDims.push(d);
      redStrides.push(strides[k]);
    } else {
      keptDims.push(d);
      keptStrides.push(strides[k]);
    }
  });
  const outN = keptDims.reduce((a, b) => a * b, 1);
  const R = redDims.reduce((a, b) => a * b, 1);
  if (outN === 0) return;
  const base = offsetExpr("o", keptDims, keptStrides);
  const inner = offsetExpr("r", redDims, redStrides);
  const s = scale === 1 ? "" : ` * ${f32(scale)}`;
  if (R >= 512 && outN < 4096) {
    const grid = grid1D(outN, 1);
    const wgsl = `${storageDecls(["x"], ["out"])}
var<workgroup> part: array<f32, ${WG_REDUCE}>;
@compute @workgroup_size(${WG_REDUCE})
fn main(@builtin(workgroup_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = ${linearIndex(grid, 1)};
  let valid = o < ${outN}u;
  var acc = 0.0;
  if (valid) {
    let b = ${base};
    for (var r = lid; r < ${R}u; r += ${WG_REDUCE}u) { acc += x[b + ${inner}]; }
  }
  part[lid] = acc;
  workgroupBarrier();
  for (var w = ${WG_REDUCE / 2}u; w > 0u; w = w / 2u) {
    if (lid < w) { part[lid] += part[lid + w]; }
    workgroupBarrier();
  }
  if (lid == 0u && valid) { out[o] = part[0]${s}; }
}`;
    dispatch(pipeline("sum_wg", wgsl), [x, out], grid);
    return;
  }
  const grid = grid1D(outN);
  const wgsl = `${storageDecls(["x"], ["out"])}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let o = ${linearIndex(grid)};
  if (o >= ${outN}u) { return; }
  let b = ${base};
  var acc = 0.0;
  for (var r = 0u; r < ${R}u; r++) { acc += x[b + ${inner}]; }
  out[o] = acc${s};
}`;
  dispatch(pipeline("sum", wgsl), [x, out], grid);
}
