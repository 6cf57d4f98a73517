// Normalisation kernels (GroupNorm, LayerNorm, BatchNorm share them). The tensor is seen through a
// "view" shape (e.g. [N, G, C/G, H·W] for GroupNorm, [N, C, H·W] for BatchNorm); statistics are taken
// over some axes of that view.
//
// * `normStats`: two-pass mean and variance (sum, then sum of squared deviations from the mean: no
//   E[x²]−E[x]² cancellation; both passes shifted by the first element, so a constant input has
//   exactly zero variance and an offset costs no precision) per statistic, writing mean, 1/sqrt(var + eps) and optionally the
//   biased variance (for running-stat updates).
// * the apply, the input and affine gradients, the running-statistics update and BatchNorm's eval mode:
//   elementwise kernels and `reduceExprs` sums over the view, whose expressions are written below.
//
// Statistics use one workgroup per statistic with a tree in workgroup memory when the reduction is long,
// and one invocation per statistic that loops otherwise.

import { elementwise, type EwInput, quarter, rowsOf } from "./elementwise.ts";
import { outputDecls, reduceExprs, reduceGroups, split, TREE_MIN, WG_RED } from "./reduce.ts";
import {
  acquireBuffer,
  type Binding,
  dispatch,
  FLAT_ARGS,
  flatIndex,
  grid1D,
  kernel,
  params,
  releaseBuffer,
  WG,
} from "./runtime.ts";
import { broadcastIndex, divU, f32, modU, paramsDecl, storageDecls } from "./wgsl.ts";
import { ANY_BATCH, NOMINAL_BATCH, withBatch } from "./batch_class.ts";

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
  /**
   * Running statistics updated in place by the same kernel (fusion "norm-running-stats"):
   * running = (1 − momentum)·running + momentum·batch, the variance made unbiased, as
   * `runningStatsUpdate` does in two more dispatches.
   */
  running?: { mean: Binding; variance: Binding; momentum: number };
}

/** What the statistics kernel's WGSL depends on. */
interface StatsSource {
  /** The view's shape class: its leading axis (the batch) is `ANY_BATCH` (see statsClass). */
  shape: readonly number[];
  axes: readonly number[];
  eps: number;
  variance: boolean;
  /** The momentum of a fused running-statistics update, or null. */
  momentum: number | null;
  /** One workgroup (tree) per statistic, chosen as for the nominal batch. */
  tree: boolean;
}

export function statsKey(s: StatsSource): string {
  return `norm_stats:${s.shape}:${s.axes}:${s.eps}:${s.variance ? 1 : 0}:${s.momentum}:${s.tree ? 1 : 0}`;
}

/** Elements per statistic and statistics of a view. */
function statSizes(shape: readonly number[], axes: readonly number[]): { outN: number; R: number } {
  let outN = 1, R = 1;
  shape.forEach((d, k) => axes.includes(k) ? (R *= d) : (outN *= d));
  return { outN, R };
}

/**
 * The statistics kernel's spec for a view: the leading axis (the batch) is left to run time, so the
 * statistics' count and, where the batch is summed (BatchNorm), the elements per statistic come from
 * `P`; the tree is chosen for the nominal batch.
 */
function statsClass(s: NormStatsSpec): StatsSource {
  return {
    shape: withBatch(s.shape, ANY_BATCH),
    axes: s.axes,
    eps: s.eps,
    variance: !!s.variance,
    momentum: s.running?.momentum ?? null,
    tree: statSizes(withBatch(s.shape, NOMINAL_BATCH), s.axes).R >= TREE_MIN,
  };
}

/** Whether the statistics sum over the batch (the view's leading axis): then R is read from `P`. */
const sumsBatch = (s: StatsSource) => s.shape.length > 1 && s.axes.includes(0);

/** The workgroup tree adding `part` into part[0]. */
const treeSum = `  workgroupBarrier();
  for (var w = ${WG_RED / 2}u; w > 0u; w = w / 2u) {
    if (lid < w) { part[lid] += part[lid + w]; }
    workgroupBarrier();
  }`;

/** The run-time parameters of the statistics kernel: statistics, elements per statistic (also / 4). */
const STATS_PARAMS = ["outN", "R", "Rq"];

/** The flat index of a workgroup of a `grid1D(count, 1)` dispatch. */
const WORKGROUP_INDEX = "(wid.x + wid.y * nwg.x)";
const WORKGROUP_ARGS =
  "@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32";

export function statsSource(s: StatsSource): string {
  const { R, base, inner } = split(s.shape, s.axes);
  const outs = [
    "mean",
    "rstd",
    ...(s.variance ? ["variance"] : []),
    ...(s.momentum !== null ? ["runningMean", "runningVar"] : []),
  ];
  const decls = storageDecls(["x"], outs);
  const batchR = sumsBatch(s);
  const invR = batchR ? "(1.0 / f32(P.R))" : f32(1 / R);
  // the running update: runningStatsUpdate's expressions on the values just written
  const k = s.momentum ?? 0;
  const unbias = batchR ? `${f32(k)} * f32(P.R) / f32(P.R - 1u)` : f32((k * R) / (R - 1));
  const running = (v: string) =>
    s.momentum === null ? "" : ` runningMean[o] = runningMean[o] * ${f32(1 - k)} + (x0 + m) * ${f32(k)};` +
      ` runningVar[o] = runningVar[o] * ${f32(1 - k)} + ${v} * ${unbias};`;
  const write = (v: string) =>
    `mean[o] = x0 + m; rstd[o] = 1.0 / sqrt(${v} + ${f32(s.eps)});${
      s.variance ? ` variance[o] = ${v};` : ""
    }${running(v)}`;
  if (s.tree) {
    // vec4 loads where the summed last axis is a multiple of 4 (as elementwise.ts vec4Applies)
    const vec = s.axes.includes(s.shape.length - 1) && s.shape[s.shape.length - 1] % 4 === 0;
    const q = vec ? split(quarter(s.shape), s.axes) : { R, base, inner };
    const sum = (e: string) => (vec ? `dot(${e}, vec4<f32>(1.0))` : e);
    const sq = (d: string) => (vec ? `dot(${d}, ${d})` : `${d} * ${d}`);
    const head = vec
      ? `@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;\n${outputDecls(1, outs).join("\n")}`
      : decls;
    const Rq = batchR ? "P.Rq" : `${q.R}u`;
    return `${head}
${paramsDecl(1 + outs.length, STATS_PARAMS)}
var<workgroup> part: array<f32, ${WG_RED}>;
@compute @workgroup_size(${WG_RED})
fn main(${WORKGROUP_ARGS}) {
  let o = ${WORKGROUP_INDEX};
  let valid = o < P.outN;
  let b = ${q.base};
  var x0 = 0.0;
  if (valid) { x0 = x[b]${vec ? ".x" : ""}; }
  var acc = 0.0;
  if (valid) {
    for (var r = lid; r < ${Rq}; r += ${WG_RED}u) { acc += ${sum(`x[b + ${q.inner}] - x0`)}; }
  }
  part[lid] = acc;
${treeSum}
  let m = part[0] * ${invR};
  workgroupBarrier();
  var sq = 0.0;
  if (valid) {
    for (var r = lid; r < ${Rq}; r += ${WG_RED}u) { let d = (x[b + ${q.inner}] - x0) - m; sq += ${sq("d")}; }
  }
  part[lid] = sq;
${treeSum}
  if (lid == 0u && valid) {
    let v = part[0] * ${invR};
    ${write("v")}
  }
}`;
  }
  const Rs = batchR ? "P.R" : `${R}u`;
  return `${decls}
${paramsDecl(1 + outs.length, STATS_PARAMS)}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let o = ${flatIndex()};
  if (o >= P.outN) { return; }
  let b = ${base};
  let x0 = x[b];
  var acc = 0.0;
  for (var r = 0u; r < ${Rs}; r++) { acc += x[b + ${inner}] - x0; }
  let m = acc * ${invR};
  var sq = 0.0;
  for (var r = 0u; r < ${Rs}; r++) { let d = (x[b + ${inner}] - x0) - m; sq += d * d; }
  let v = sq * ${invR};
  ${write("v")}
}`;
}

/** Mean and reciprocal standard deviation of `x` over `axes` of its view, two-pass. */
export function normStats(x: Binding, s: NormStatsSpec): void {
  const { outN, R } = statSizes(s.shape, s.axes);
  if (outN === 0) return;
  const src = statsClass(s);
  const pipe = kernel(statsKey(src), src.tree ? "norm_stats_wg" : "norm_stats", () => statsSource(src));
  const vec = src.tree && s.axes.includes(s.shape.length - 1) && s.shape[s.shape.length - 1] % 4 === 0;
  const bindings = [
    x,
    s.mean,
    s.rstd,
    ...(s.variance ? [s.variance] : []),
    ...(s.running ? [s.running.mean, s.running.variance] : []),
    params(outN, R, vec ? R / 4 : R),
  ];
  dispatch(pipe, bindings, src.tree ? grid1D(outN, 1) : grid1D(outN));
}

/** Statistics from the per-block partials a producing kernel wrote (see `normStatsFromParts`). */
export interface NormPartsSpec {
  /** Statistics (e.g. N·G for GroupNorm), each combining `parts` consecutive partials. */
  stats: number;
  parts: number;
  eps: number;
  mean: Binding;
  rstd: Binding;
}

/**
 * Mean and 1/sqrt(var + eps) per statistic from partials vec4(count, mean, M2, ·) (M2: the sum of
 * squared deviations from the partial's mean), combined pairwise as Chan et al. do:
 *   n = na + nb, δ = mb − ma, mean = ma + δ·nb/n, M2 = M2a + M2b + δ²·na·nb/n
 * — no E[x²] − E[x]² cancellation, like the two-pass `normStats`. One workgroup per statistic: each
 * lane folds a strided share of the partials, then a tree in workgroup memory.
 */
export function normStatsFromParts(parts: Binding, s: NormPartsSpec): void {
  if (s.stats === 0) return;
  const key = `norm_stats_parts:${s.parts}:${s.eps}`;
  const pipe = kernel(
    key,
    "norm_stats_parts",
    () =>
      `@group(0) @binding(0) var<storage, read> parts: array<vec4<f32>>;
${outputDecls(1, ["mean", "rstd"]).join("\n")}
${paramsDecl(3, ["stats"])}
var<workgroup> pn: array<f32, ${WG_RED}>;
var<workgroup> pm: array<f32, ${WG_RED}>;
var<workgroup> pq: array<f32, ${WG_RED}>;
fn combine(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
  let n = a.x + b.x;
  if (n == 0.0) { return a; }
  let d = b.y - a.y;
  let f = b.x / n;
  return vec3<f32>(n, a.y + d * f, a.z + b.z + d * d * a.x * f);
}
@compute @workgroup_size(${WG_RED})
fn main(${WORKGROUP_ARGS}) {
  let o = ${WORKGROUP_INDEX};
  var acc = vec3<f32>(0.0);
  if (o < P.stats) {
    for (var r = lid; r < ${s.parts}u; r += ${WG_RED}u) { acc = combine(acc, parts[o * ${s.parts}u + r].xyz); }
  }
  pn[lid] = acc.x;
  pm[lid] = acc.y;
  pq[lid] = acc.z;
  workgroupBarrier();
  for (var w = ${WG_RED / 2}u; w > 0u; w = w / 2u) {
    if (lid < w) {
      let c = combine(vec3<f32>(pn[lid], pm[lid], pq[lid]), vec3<f32>(pn[lid + w], pm[lid + w], pq[lid + w]));
      pn[lid] = c.x;
      pm[lid] = c.y;
      pq[lid] = c.z;
    }
    workgroupBarrier();
  }
  if (lid == 0u && o < P.stats) {
    mean[o] = pm[0];
    rstd[o] = 1.0 / sqrt(pq[0] / max(pn[0], 1.0) + ${f32(s.eps)});
  }
}`,
  );
  dispatch(pipe, [parts, s.mean, s.rstd, params(s.stats)], grid1D(s.stats, 1));
}

// ---------------------------------------------------------------- apply and backward
//
// The rest of a normalisation is elementwise kernels and sums (kernels/elementwise.ts, reduce.ts) over
// the view; their WGSL expressions live here. With x̂ = (x − mean)·rstd and ĝ = g·w:
//   y  = x̂·w + b
//   dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ·x̂))   (means over the statistic's elements)
//   dw = Σ g·x̂,  db = Σ g                        (sums over everything but the affine axes)
// and with constant statistics (BatchNorm in eval) dx = g·w·rstd.

/** The shapes of one normalisation: the view of x, the statistic's axes, the affine broadcast shape. */
export interface NormView {
  /** Names the kernels (e.g. "groupNorm"). */
  op: string;
  view: readonly number[];
  statAxes: readonly number[];
  /** Same rank as the view; weight and bias broadcast from it. */
  affShape: readonly number[];
}

/** The statistics' shape: the view with the statistic's axes set to 1. */
export function statShape(v: NormView): number[] {
  return v.view.map((d, i) => (v.statAxes.includes(i) ? 1 : d));
}

/** Elements per statistic. */
function statCount(v: NormView): number {
  return v.statAxes.reduce((a, i) => a * v.view[i], 1);
}

const ew = (binding: Binding, shape: readonly number[]): EwInput => ({ binding, shape });

/** out = (x − mean)·rstd·w + b (weight and bias optional). */
export function normApply(
  v: NormView,
  x: Binding,
  mean: Binding,
  rstd: Binding,
  weight: Binding | null,
  bias: Binding | null,
  out: Binding,
): void {
  const st = statShape(v);
  const inputs = [ew(x, v.view), ew(mean, st), ew(rstd, st)];
  let expr = "(v0 - v1) * v2";
  if (weight) {
    expr = `${expr} * v${inputs.length}`;
    inputs.push(ew(weight, v.affShape));
  }
  if (bias) {
    expr = `${expr} + v${inputs.length}`;
    inputs.push(ew(bias, v.affShape));
  }
  elementwise(`${v.op}_apply`, expr, inputs, out, v.view);
}

/** dw = Σ g·x̂ and db = Σ g over every axis but the affine ones (either may be null: not wanted). */
export function normAffineBackward(
  v: NormView,
  g: Binding,
  x: Binding,
  mean: Binding,
  rstd: Binding,
  dw: Binding | null,
  db: Binding | null,
): void {
  if (!dw && !db) return;
  const st = statShape(v);
  const affAxes = v.view.map((_, i) => i).filter((i) => v.affShape[i] === 1);
  const exprs: string[] = [], outs: Binding[] = [];
  if (dw) {
    exprs.push("v0 * (v1 - v2) * v3");
    outs.push(dw);
  }
  if (db) {
    exprs.push("v0");
    outs.push(db);
  }
  reduceExprs(`${v.op}_affine_backward`, {
    shape: v.view,
    axes: affAxes,
    inputs: [ew(g, v.view), ew(x, v.view), ew(mean, st), ew(rstd, st)],
    exprs,
    outs,
  });
}

/** dx through batch statistics: two means per statistic (in pooled scratch buffers), then one pass. */
export function normInputBackward(
  v: NormView,
  g: Binding,
  x: Binding,
  mean: Binding,
  rstd: Binding,
  weight: Binding | null,
  dx: Binding,
): void {
  const st = statShape(v);
  const statBytes = 4 * st.reduce((a, b) => a * b, 1);
  const s1 = acquireBuffer(statBytes), s2 = acquireBuffer(statBytes);
  const inputs = [ew(g, v.view), ew(x, v.view), ew(mean, st), ew(rstd, st)];
  const gw = weight ? "(v0 * v4)" : "v0";
  if (weight) inputs.push(ew(weight, v.affShape));
  reduceExprs(`${v.op}_backward_sums`, {
    shape: v.view,
    axes: v.statAxes,
    inputs,
    exprs: [gw, `${gw} * (v1 - v2) * v3`],
    outs: [s1, s2],
    scale: 1 / statCount(v),
  });
  const k = inputs.length;
  elementwise(
    `${v.op}_backward_input`,
    `v3 * (${gw} - v${k} - (v1 - v2) * v3 * v${k + 1})`,
    [...inputs, ew(s1, st), ew(s2, st)],
    dx,
    v.view,
  );
  // commands already recorded keep reading them; a later use is ordered after
  releaseBuffer(s1);
  releaseBuffer(s2);
}

/**
 * The whole backward through batch statistics (fusion "norm-backward-sums"): the two means per
 * statistic (into one pooled scratch buffer) and dw, db per channel, then the dx pass. The sums are
 * one reduction kernel over the view, or, where the view's last axis is summed and the affine is
 * constant along it (GroupNorm, BatchNorm), two kernels by rows (below). Any of dx, dw, db may be
 * null (not wanted).
 */
export function normBackward(
  v: NormView,
  g: Binding,
  x: Binding,
  mean: Binding,
  rstd: Binding,
  weight: Binding | null,
  dx: Binding | null,
  dw: Binding | null,
  db: Binding | null,
): void {
  const st = statShape(v);
  const statN = st.reduce((a, b) => a * b, 1);
  // s2 starts at an offset every adapter accepts for a storage binding (the limit is at most 256 bytes)
  const s2Offset = align64(statN);
  const inputs = [ew(g, v.view), ew(x, v.view), ew(mean, st), ew(rstd, st)];
  const gw = weight ? "(v0 * v4)" : "v0";
  if (weight) inputs.push(ew(weight, v.affShape));
  const sums = dx ? acquireBuffer(4 * (s2Offset + statN)) : null;
  const statOut = sums && { buffer: sums, offset: 0, size: 4 * (s2Offset + statN) };
  if (statOut && rowSumsApply(v)) rowsBackwardSums(v, g, x, mean, rstd, weight, statOut, s2Offset, dw, db);
  else {
    const outs: Binding[] = [];
    const groups = [];
    if (statOut) {
      outs.push(statOut);
      groups.push({
        axes: v.statAxes,
        exprs: [gw, `${gw} * (v1 - v2) * v3`],
        dst: [{ slot: 0, offset: 0 }, { slot: 0, offset: s2Offset }],
        scale: 1 / statCount(v),
      });
    }
    groups.push(...affineGroups(v, outs, dw, db, "v0 * (v1 - v2) * v3", "v0"));
    reduceGroups(`${v.op}_backward_sums`, { shape: v.view, inputs, outs, groups });
  }
  if (dx && sums) {
    const k = inputs.length;
    elementwise(
      `${v.op}_backward_input`,
      `v3 * (${gw} - v${k} - (v1 - v2) * v3 * v${k + 1})`,
      [
        ...inputs,
        ew({ buffer: sums, offset: 0, size: 4 * statN }, st),
        ew({ buffer: sums, offset: 4 * s2Offset, size: 4 * statN }, st),
      ],
      dx,
      v.view,
    );
    releaseBuffer(sums); // commands already recorded keep reading it; a later use is ordered after
  }
}

const align64 = (n: number) => Math.ceil(n / 64) * 64;

/** The reduction groups of dw and db (those wanted), their outputs appended to `outs`. */
function affineGroups(
  v: NormView,
  outs: Binding[],
  dw: Binding | null,
  db: Binding | null,
  dwExpr: string,
  dbExpr: string,
) {
  const axes = v.view.map((_, i) => i).filter((i) => v.affShape[i] === 1);
  const exprs: string[] = [], dst: { slot: number; offset: number }[] = [];
  for (const [b, e] of [[dw, dwExpr], [db, dbExpr]] as const) {
    if (!b) continue;
    exprs.push(e);
    dst.push({ slot: outs.length, offset: 0 });
    outs.push(b);
  }
  return exprs.length ? [{ axes, exprs, dst, scale: 1 }] : [];
}

// ---------------------------------------------------------------- backward sums by rows
//
// Where the view's last axis (H·W for GroupNorm and BatchNorm) is summed by the statistics and by the
// affine gradients alike, and mean, rstd and the weight are constant along it, every sum is a weighted
// sum of two per-row sums: A = Σ g and B = rstd·Σ g·(x − mean) over each row of the last axis, e.g.
//   mean(ĝ) = Σ_c w·A / count,  mean(ĝ·x̂) = Σ_c w·B / count,  db = Σ_n A,  dw = Σ_n B.
// So g and x are read once, by a loop per row with no per-element broadcast loads, and a second small
// reduction over the rows does the rest (one workgroup tree per output over 16k–64k elements, with
// the weight, mean and rstd loaded per element, ran 3–4× slower on lavapipe).

/** Whether `normBackward` takes its sums by rows (see above). */
function rowSumsApply(v: NormView): boolean {
  const last = v.view.length - 1;
  return v.view[last] > 1 && v.statAxes.includes(last) && v.affShape[last] === 1;
}

/**
 * The rows of the view's last axis and their chunks (elementwise.ts rowsOf), the chunking chosen as for
 * the nominal batch so that the kernel and the reduction after it do not depend on the batch.
 */
function rowPlan(v: NormView): { rows: number; L: number; chunks: number; len: number } {
  const { chunks, len } = rowsOf(withBatch(v.view, NOMINAL_BATCH));
  const { rows, L } = rowsOf(v.view);
  return { rows, L, chunks, len };
}

/**
 * A[t] = Σ g and B[t] = rstd · Σ g·(x − mean) over chunk t of the rows of the view's last axis, into
 * `out` (A at 0, B at `bOffset`; rows × chunks each, chunk-minor). The number of chunks comes from `P`.
 */
function rowSums(
  v: NormView,
  g: Binding,
  x: Binding,
  mean: Binding,
  rstd: Binding,
  out: Binding,
  bOffset: number,
) {
  const { rows, L, chunks, len } = rowPlan(v);
  const vec = L % 4 === 0;
  const q = vec ? 4 : 1;
  const total = rows * chunks;
  const view = withBatch(v.view, ANY_BATCH);
  const st = statShape({ ...v, view });
  const lead = [...view.slice(0, -1), 1];
  const key = `norm_rows:${view}:${v.statAxes}:${chunks}:${len}`;
  const pipe = kernel(key, `${v.op}_backward_rows`, () => {
    const t = vec ? "vec4<f32>" : "f32";
    const sum = (e: string) => (vec ? `dot(${e}, vec4<f32>(1.0))` : e);
    return `@group(0) @binding(0) var<storage, read> g: array<${t}>;
@group(0) @binding(1) var<storage, read> x: array<${t}>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> rstd: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
${paramsDecl(5, ["total", "bOffset"])}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let t = ${flatIndex()};
  if (t >= P.total) { return; }
  let r = ${divU("t", chunks)};
  let s = ${broadcastIndex(lead, st, "r")};
  let m = mean[s];
  let start = r * ${L / q}u + ${modU("t", chunks)} * ${len / q}u;
  let end = min(start + ${len / q}u, r * ${L / q}u + ${L / q}u);
  var a = ${t}(0.0);
  var b = ${t}(0.0);
  for (var i = start; i < end; i++) {
    let gi = g[i];
    a += gi;
    b += gi * (x[i] - m);
  }
  out[t] = ${sum("a")};
  out[P.bOffset + t] = ${sum("b")} * rstd[s];
}`;
  });
  dispatch(pipe, [g, x, mean, rstd, out, params(total, bOffset)], grid1D(total));
}

/**
 * `normBackward`'s sums by rows: the row sums, then their weighted sums into `statOut` (the two means
 * at 0 and `s2Offset`) and dw, db.
 */
function rowsBackwardSums(
  v: NormView,
  g: Binding,
  x: Binding,
  mean: Binding,
  rstd: Binding,
  weight: Binding | null,
  statOut: Binding,
  s2Offset: number,
  dw: Binding | null,
  db: Binding | null,
): void {
  const { rows, chunks } = rowPlan(v);
  const partN = align64(rows * chunks);
  const parts = acquireBuffer(4 * 2 * partN);
  rowSums(v, g, x, mean, rstd, { buffer: parts, offset: 0, size: 4 * 2 * partN }, partN);
  // the row sums as a view of rank equal to the view's, its last axis the chunks
  const pv = [...v.view.slice(0, -1), chunks];
  const inputs = [
    ew({ buffer: parts, offset: 0, size: 4 * rows * chunks }, pv),
    ew({ buffer: parts, offset: 4 * partN, size: 4 * rows * chunks }, pv),
  ];
  if (weight) inputs.push(ew(weight, v.affShape));
  const outs: Binding[] = [statOut];
  const groups = [{
    axes: v.statAxes,
    exprs: weight ? ["v0 * v2", "v1 * v2"] : ["v0", "v1"],
    dst: [{ slot: 0, offset: 0 }, { slot: 0, offset: s2Offset }],
    scale: 1 / statCount(v),
  }, ...affineGroups(v, outs, dw, db, "v1", "v0")];
  reduceGroups(`${v.op}_backward_row_sums`, { shape: pv, inputs, outs, groups });
  releaseBuffer(parts); // commands already recorded keep reading it; a later use is ordered after
}

/**
 * running = (1 − momentum)·running + momentum·batch for `channels` statistics, in place; the variance
 * is made unbiased (× R/(R − 1), R elements per statistic).
 */
export function runningStatsUpdate(
  channels: number,
  momentum: number,
  count: number,
  mean: Binding,
  variance: Binding,
  runningMean: Binding,
  runningVar: Binding,
): void {
  const k = momentum, c = [channels];
  elementwise("running_mean", `o * ${f32(1 - k)} + v0 * ${f32(k)}`, [ew(mean, c)], runningMean, c, true);
  elementwise(
    "running_var",
    `o * ${f32(1 - k)} + v0 * ${f32((k * count) / (count - 1))}`,
    [ew(variance, c)],
    runningVar,
    c,
    true,
  );
}

/** rstd = 1/sqrt(var + eps) of constant statistics of shape `shape`. */
export function normEvalRstd(shape: readonly number[], eps: number, variance: Binding, rstd: Binding): void {
  elementwise("bn_eval_rstd", `1.0 / sqrt(v0 + ${f32(eps)})`, [ew(variance, shape)], rstd, shape);
}

/** dx = g·rstd·w with constant statistics. */
export function normEvalBackward(
  v: NormView,
  g: Binding,
  rstd: Binding,
  weight: Binding | null,
  dx: Binding,
): void {
  const ins = [ew(g, v.view), ew(rstd, statShape(v)), ...(weight ? [ew(weight, v.affShape)] : [])];
  elementwise(`${v.op}_eval_backward`, weight ? "v0 * v1 * v2" : "v0 * v1", ins, dx, v.view);
}
