// Normalisation kernels (GroupNorm, LayerNorm, BatchNorm share them). The tensor is seen through a
// "view" shape (e.g. [N, G, C/G, H·W] for GroupNorm, [N, C, H·W] for BatchNorm); statistics are taken
// over some axes of that view.
//
// * `normStats`: two-pass mean and variance (sum, then sum of squared deviations from the mean: no
//   E[x²]−E[x]² cancellation; both passes shifted by the first element, so a constant input has
//   exactly zero variance and an offset costs no precision) per statistic, writing mean, 1/sqrt(var + eps) and optionally the
//   biased variance (for running-stat updates).
// * `reduceExprs`: sums of several WGSL expressions over the reduced axes in one pass, with the
//   inputs broadcast to the view like the elementwise kernels (the backward's Σg·ŵ, Σg·ŵ·x̂, Σg·x̂, Σg).
//
// Both use one workgroup per statistic with a tree in workgroup memory when the reduction is long,
// and one invocation per statistic that loops otherwise.

import type { EwInput } from "./elementwise.ts";
import { type Binding, dispatch, grid1D, linearIndex, pipeline, WG } from "./runtime.ts";
import { broadcastIndex, f32, storageDecls, stridesOf } from "./wgsl.ts";

const WG_RED = 64;
/** Reductions at least this long use a workgroup (tree) per output. */
export const TREE_MIN = 256;

/** WGSL for the flat offset of coordinate `idx` over `dims` (sizes) with memory `strides`. */
function offsetExpr(idx: string, dims: number[], strides: number[]): string {
  if (dims.length === 0) return "0u";
  const inner = stridesOf(dims);
  const terms = dims.map((d, k) => {
    const coord = k === 0 ? `(${idx} / ${inner[k]}u)` : `((${idx} / ${inner[k]}u) % ${d}u)`;
    return strides[k] === 1 ? coord : `${coord} * ${strides[k]}u`;
  });
  return terms.join(" + ");
}

interface Split {
  outN: number;
  R: number;
  base: string;
  inner: string;
}

/** Splits `shape` into kept and reduced axes: the output index `o` and the reduction index `r`. */
function split(shape: readonly number[], axes: readonly number[]): Split {
  const strides = stridesOf(shape);
  const kd: number[] = [], ks: number[] = [], rd: number[] = [], rs: number[] = [];
  let last: "kept" | "reduced" | null = null;
  shape.forEach((d, k) => {
    if (d === 1) return;
    const red = axes.includes(k);
    const [dims, strs] = red ? [rd, rs] : [kd, ks];
    if (last === (red ? "reduced" : "kept")) {
      // adjacent axes of the same kind in a row-major view merge into one (fewer divisions per element)
      dims[dims.length - 1] *= d;
      strs[strs.length - 1] = strides[k];
    } else {
      dims.push(d);
      strs.push(strides[k]);
    }
    last = red ? "reduced" : "kept";
  });
  return {
    outN: kd.reduce((a, b) => a * b, 1),
    R: rd.reduce((a, b) => a * b, 1),
    base: offsetExpr("o", kd, ks),
    inner: offsetExpr("r", rd, rs),
  };
}

export interface ReduceExprsSpec {
  /** The index space (a view of the full-size tensor). */
  shape: readonly number[];
  /** Axes of `shape` that are summed. */
  axes: readonly number[];
  /** Inputs, broadcast to `shape`, read as `v0..vn` in the expressions. */
  inputs: EwInput[];
  /** One WGSL f32 expression per output. */
  exprs: string[];
  /** One output per expression, laid out as `shape` with the reduced axes removed. */
  outs: Binding[];
  /** Factor applied to every sum (e.g. 1/count for a mean). */
  scale?: number;
}

/** out_k[kept] = scale · Σ_reduced expr_k. */
export function reduceExprs(name: string, s: ReduceExprsSpec): void {
  const { outN, R, base, inner } = split(s.shape, s.axes);
  if (outN === 0) return;
  const K = s.exprs.length;
  const names = s.inputs.map((_, k) => `in${k}`);
  const outNames = s.exprs.map((_, k) => `out${k}`);
  const loads = s.inputs.map((inp, k) => `let v${k} = in${k}[${broadcastIndex(s.shape, inp.shape, "i")}];`)
    .join(" ");
  const sc = s.scale === undefined || s.scale === 1 ? "" : ` * ${f32(s.scale)}`;
  const accs = s.exprs.map((_, k) => `var acc${k} = 0.0;`).join(" ");
  const adds = s.exprs.map((e, k) => `acc${k} += ${e};`).join(" ");
  const decls = storageDecls(names, outNames);
  const bindings = [...s.inputs.map((x) => x.binding), ...s.outs];
  if (R >= TREE_MIN) {
    const grid = grid1D(outN, 1);
    const wgsl = `${decls}
var<workgroup> part: array<f32, ${WG_RED * K}>;
@compute @workgroup_size(${WG_RED})
fn main(@builtin(workgroup_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = ${linearIndex(grid, 1)};
  let valid = o < ${outN}u;
  ${accs}
  if (valid) {
    let b = ${base};
    for (var r = lid; r < ${R}u; r += ${WG_RED}u) {
      let i = b + ${inner};
      ${loads}
      ${adds}
    }
  }
${s.exprs.map((_, k) => `  part[${k * WG_RED}u + lid] = acc${k};`).join("\n")}
  workgroupBarrier();
  for (var w = ${WG_RED / 2}u; w > 0u; w = w / 2u) {
    if (lid < w) {
${s.exprs.map((_, k) => `      part[${k * WG_RED}u + lid] += part[${k * WG_RED}u + lid + w];`).join("\n")}
    }
    workgroupBarrier();
  }
  if (lid == 0u && valid) {
${s.exprs.map((_, k) => `    out${k}[o] = part[${k * WG_RED}u]${sc};`).join("\n")}
  }
}`;
    dispatch(pipeline(`${name}_wg`, wgsl), bindings, grid);
    return;
  }
  const grid = grid1D(outN);
  const wgsl = `${decls}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let o = ${linearIndex(grid)};
  if (o >= ${outN}u) { return; }
  let b = ${base};
  ${accs}
  for (var r = 0u; r < ${R}u; r++) {
    let i = b + ${inner};
    ${loads}
    ${adds}
  }
${s.exprs.map((_, k) => `  out${k}[o] = acc${k}${sc};`).join("\n")}
}`;
  dispatch(pipeline(name, wgsl), bindings, grid);
}

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
