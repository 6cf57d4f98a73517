// Normalisation kernels (GroupNorm, LayerNorm, BatchNorm share them). The tensor is seen through a
// "view" shape (e.g. [N, G, C/G, H·W] for GroupNorm, [N, C, H·W] for BatchNorm); statistics are taken
// over some axes of that view.
//
// * `normStats`: two-pass mean and variance (sum, then sum of squared deviations from the mean: no
//   E[x²]−E[x]² cancellation; both passes shifted by the first element, so a constant input has
//   exactly zero variance and an offset costs no precision) per statistic, writing mean, 1/sqrt(var + eps) and optionally the
//   biased variance (for running-stat updates).
// The backward's sums (Σg·ŵ, Σg·ŵ·x̂, Σg·x̂, Σg) use `reduceExprs` from reduce.ts.
//
// Statistics use one workgroup per statistic with a tree in workgroup memory when the reduction is long,
// and one invocation per statistic that loops otherwise.

import { type Binding, dispatch, grid1D, linearIndex, pipeline, WG } from "./runtime.ts";
import { f32, storageDecls } from "./wgsl.ts";
import { split, TREE_MIN, WG_RED } from "./reduce.ts";

export interface NormStatsSpec {
  /** The view of `x`. */
  shape: readonly number[];
  /** Axes of `shape` the statistics are taken over. */
  axes: readonly number[];
  eps: number;
  /** Per statistic: the mean, 1/sqrt(biased var + eps), and (optional) the biased variance. */
  mean: Binding;
  rstd: Binding;
  variance?: Binding;
}

/** Mean and reciprocal standard deviation of `x` over `axes` of its view, two-pass. */
export function normStats(x: Binding, s: NormStatsSpec): void {
  const { outN, R, base, inner } = split(s.shape, s.axes);
  if (outN === 0) return;
  const outs = ["mean", "rstd", ...(s.variance ? ["variance"] : [])];
  const decls = storageDecls(["x"], outs);
  const bindings = [x, s.mean, s.rstd, ...(s.variance ? [s.variance] : [])];
  const invR = f32(1 / R);
  const write = (v: string) =>
    `mean[o] = x0 + m; rstd[o] = 1.0 / sqrt(${v} + ${f32(s.eps)});${
      s.variance ? ` variance[o] = ${v};` : ""
    }`;
  if (R >= TREE_MIN) {
    const grid = grid1D(outN, 1);
    const tree = `  workgroupBarrier();
  for (var w = ${WG_RED / 2}u; w > 0u; w = w / 2u) {
    if (lid < w) { part[lid] += part[lid + w]; }
    workgroupBarrier();
  }`;
    const wgsl = `${decls}
var<workgroup> part: array<f32, ${WG_RED}>;
@compute @workgroup_size(${WG_RED})
fn main(@builtin(workgroup_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = ${linearIndex(grid, 1)};
  let valid = o < ${outN}u;
  let b = ${base};
  var x0 = 0.0;
  if (valid) { x0 = x[b]; }
  var acc = 0.0;
  if (valid) {
    for (var r = lid; r < ${R}u; r += ${WG_RED}u) { acc += x[b + ${inner}] - x0; }
  }
  part[lid] = acc;
${tree}
  let m = part[0] * ${invR};
  workgroupBarrier();
  var sq = 0.0;
  if (valid) {
    for (var r = lid; r < ${R}u; r += ${WG_RED}u) { let d = (x[b + ${inner}] - x0) - m; sq += d * d; }
  }
  part[lid] = sq;
${tree}
  if (lid == 0u && valid) {
    let v = part[0] * ${invR};
    ${write("v")}
  }
}`;
    dispatch(pipeline("norm_stats_wg", wgsl), bindings, grid);
    return;
  }
  const grid = grid1D(outN);
  const wgsl = `${decls}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let o = ${linearIndex(grid)};
  if (o >= ${outN}u) { return; }
  let b = ${base};
  let x0 = x[b];
  var acc = 0.0;
  for (var r = 0u; r < ${R}u; r++) { acc += x[b + ${inner}] - x0; }
  let m = acc * ${invR};
  var sq = 0.0;
  for (var r = 0u; r < ${R}u; r++) { let d = (x[b + ${inner}] - x0) - m; sq += d * d; }
  let v = sq * ${invR};
  ${write("v")}
}`;
  dispatch(pipeline("norm_stats", wgsl), bindings, grid);
}
