// Sum reductions over any set of axes, of one or several WGSL expressions at once, with inputs
// broadcast like the elementwise kernels (norm backward sums, bias gradients, broadcast gradients).
// Long reductions use one workgroup per output (tree in workgroup memory); otherwise one invocation
// per output loops over its elements. `key(name, spec)` names the pipeline and `source(spec)` runs only on a
// pipeline-cache miss; `reduceExprs` is the launcher on bindings.

import { type EwInput, quarter, vec4Applies, vec4Inputs } from "./elementwise.ts";
import { type Binding, dispatch, grid1D, kernel, linearIndex, WG } from "./runtime.ts";
import { broadcastIndex, divU, f32, modU, storageDecls, stridesOf } from "./wgsl.ts";

export const WG_RED = 64;
/** Reductions at least this long use a workgroup (tree) per output. */
export const TREE_MIN = 256;

/** WGSL for the flat offset of coordinate `idx` over `dims` (sizes) with memory `strides`. */
function offsetExpr(idx: string, dims: number[], strides: number[]): string {
  if (dims.length === 0) return "0u";
  const inner = stridesOf(dims);
  const terms = dims.map((d, k) => {
    const coord = k === 0 ? divU(idx, inner[k]) : modU(divU(idx, inner[k]), d);
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
export function split(shape: readonly number[], axes: readonly number[]): Split {
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

/** What a reduction's WGSL depends on (the bindings aside). */
export interface ReduceSource {
  shape: readonly number[];
  axes: readonly number[];
  inputShapes: readonly (readonly number[])[];
  exprs: readonly string[];
  scale: number;
}

/** Writable f32 arrays `names`, bound after `first` inputs (beside the vec4 kernels' input declarations). */
export const outputDecls = (first: number, names: string[]): string[] =>
  names.map((n, j) => `@group(0) @binding(${first + j}) var<storage, read_write> ${n}: array<f32>;`);

/** Whether a reduction of `R` elements per output runs one workgroup (tree) per output. */
const usesTree = (R: number) => R >= TREE_MIN;

export function key(name: string, s: ReduceSource): string {
  // the expressions go last, joined by a character WGSL does not use
  return `red:${name}:${s.shape}:${s.axes}:${s.inputShapes.join(";")}:${s.scale}:${s.exprs.join("#")}`;
}

export function source(s: ReduceSource): string {
  const { outN, R, base, inner } = split(s.shape, s.axes);
  const K = s.exprs.length;
  const names = s.inputShapes.map((_, k) => `in${k}`);
  const outNames = s.exprs.map((_, k) => `out${k}`);
  const loads = s.inputShapes.map((shape, k) => `let v${k} = in${k}[${broadcastIndex(s.shape, shape, "i")}];`)
    .join(" ");
  const sc = s.scale === 1 ? "" : ` * ${f32(s.scale)}`;
  const accs = s.exprs.map((_, k) => `var acc${k} = 0.0;`).join(" ");
  const adds = s.exprs.map((e, k) => `acc${k} += ${e};`).join(" ");
  const decls = storageDecls(names, outNames);
  if (usesTree(R)) {
    const grid = grid1D(outN, 1);
    // vec4 loads where the summed last axis allows (as reduceGroups)
    const vec = vec4Applies({ inputShapes: s.inputShapes, outShape: s.shape }) &&
      s.axes.includes(s.shape.length - 1);
    const v4 = vec4Inputs(s.inputShapes, s.shape, "i");
    const q = vec ? split(quarter(s.shape), s.axes) : { R, base, inner };
    const body = vec
      ? `${v4.loads.join(" ")}\n      ${[0, 1, 2, 3].map((c) => `{ ${v4.component(c)} ${adds} }`).join(" ")}`
      : `${loads}\n      ${adds}`;
    return `${vec ? [...v4.decls, ...outputDecls(names.length, outNames)].join("\n") : decls}
var<workgroup> part: array<f32, ${WG_RED * K}>;
@compute @workgroup_size(${WG_RED})
fn main(@builtin(workgroup_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = ${linearIndex(grid, 1)};
  let valid = o < ${outN}u;
  ${accs}
  if (valid) {
    let b = ${q.base};
    for (var r = lid; r < ${q.R}u; r += ${WG_RED}u) {
      let i = b + ${q.inner};
      ${body}
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
  }
  if (sumsVec4(s)) {
    // four neighbouring outputs per invocation, read and written as vec4 (see sumsVec4)
    const q = split(quarter(s.shape), s.axes);
    const grid = grid1D(q.outN);
    return `${storageDecls(names, outNames, "array<vec4<f32>>")}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let o = ${linearIndex(grid)};
  if (o >= ${q.outN}u) { return; }
  let b = ${q.base};
  var acc0 = vec4<f32>(0.0);
  for (var r = 0u; r < ${q.R}u; r++) { acc0 += in0[b + ${q.inner}]; }
  out0[o] = acc0${sc};
}`;
  }
  const grid = grid1D(outN);
  return `${decls}
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
}

/**
 * Whether a short reduction is a plain sum of one full-size input whose kept last axis is a multiple of
 * 4: then each invocation takes four neighbouring outputs with vec4 loads (e.g. a split reduction's
 * partials [chunks, outputs]; on lavapipe scalar storage loads ran at 0.8 GB/s there).
 */
function sumsVec4(s: ReduceSource): boolean {
  const last = s.shape.length - 1;
  return s.exprs.length === 1 && s.exprs[0] === "v0" && s.inputShapes.length === 1 &&
    s.inputShapes[0].length === s.shape.length && s.inputShapes[0].every((d, i) => d === s.shape[i]) &&
    !s.axes.includes(last) && s.shape[last] % 4 === 0 && !usesTree(sizes(s.shape, s.axes).R);
}

/** Number of outputs and of summed elements per output. */
function sizes(shape: readonly number[], axes: readonly number[]): { outN: number; R: number } {
  let outN = 1, R = 1;
  shape.forEach((d, k) => axes.includes(k) ? (R *= d) : (outN *= d));
  return { outN, R };
}

/** out_k[kept] = scale · Σ_reduced expr_k. */
export function reduceExprs(name: string, s: ReduceExprsSpec): void {
  const { outN, R } = sizes(s.shape, s.axes);
  if (outN === 0) return;
  const src: ReduceSource = {
    shape: s.shape,
    axes: s.axes,
    inputShapes: s.inputs.map((x) => x.shape),
    exprs: s.exprs,
    scale: s.scale ?? 1,
  };
  const tree = usesTree(R);
  const label = tree ? `${name}_wg` : name;
  const grid = tree ? grid1D(outN, 1) : grid1D(sumsVec4(src) ? outN / 4 : outN);
  dispatch(
    kernel(key(name, src), label, () => source(src)),
    [...s.inputs.map((x) => x.binding), ...s.outs],
    grid,
  );
}

/** out[kept coords] = scale · Σ over `axes` of x (shape `shape`). */
export function sumAxes(
  x: Binding,
  shape: readonly number[],
  axes: readonly number[],
  out: Binding,
  scale = 1,
): void {
  reduceExprs("sum", { shape, axes, inputs: [{ binding: x, shape }], exprs: ["v0"], outs: [out], scale });
}

// ---------------------------------------------------------------- several reductions, one dispatch

/** One reduction of a `reduceGroups` dispatch: its axes, expressions and where each sum goes. */
export interface ReduceGroup {
  /** Axes of the shared shape that this group sums. */
  axes: readonly number[];
  /** One WGSL f32 expression per output, over the shared inputs `v0..vn`. */
  exprs: string[];
  /** Per expression: the writable binding (index into `outs`) and the float offset its outputs start at. */
  dst: { slot: number; offset: number }[];
  scale?: number;
}

export interface ReduceGroupsSpec {
  /** The index space every group reduces (a view of the full-size tensor). */
  shape: readonly number[];
  inputs: EwInput[];
  outs: Binding[];
  groups: ReduceGroup[];
}

interface GroupsSource {
  shape: readonly number[];
  inputShapes: readonly (readonly number[])[];
  outs: number;
  groups: ReduceGroup[];
}

function groupsKey(name: string, s: GroupsSource): string {
  const g = s.groups.map((r) =>
    `${r.axes}|${r.dst.map((d) => `${d.slot}@${d.offset}`)}|${r.scale ?? 1}|${r.exprs.join("#")}`
  );
  return `redg:${name}:${s.shape}:${s.inputShapes.join(";")}:${s.outs}:${g.join("&")}`;
}

/**
 * WGSL of `reduceGroups`: the workgroups are numbered across the groups (group 0's outputs first), and
 * each runs the tree reduction of one output of its group. The branch on the workgroup's number is
 * uniform, so the barriers inside it are valid.
 */
/**
 * Whether `reduceGroups` reads vec4s: every group sums the last axis, and the inputs are whole along
 * it or broadcast across it (as the vec4 elementwise kernel; each expression runs per component).
 */
function groupsVec4(s: GroupsSource): boolean {
  const last = s.shape.length - 1;
  return vec4Applies({ inputShapes: s.inputShapes, outShape: s.shape }) &&
    s.groups.every((g) => g.axes.includes(last));
}

/** Whether every group of a `reduceGroups` is short enough for one invocation per output (no tree). */
function groupsLoop(s: Pick<GroupsSource, "shape" | "groups">): boolean {
  return s.groups.every((g) => !usesTree(sizes(s.shape, g.axes).R));
}

/** WGSL of `reduceGroups` when every group is short: one invocation per output, numbered as the trees. */
function groupsLoopSource(s: GroupsSource, grid: [number, number]): string {
  const names = s.inputShapes.map((_, k) => `in${k}`);
  const outNames = Array.from({ length: s.outs }, (_, k) => `out${k}`);
  const loads = s.inputShapes.map((sh, k) => `let v${k} = in${k}[${broadcastIndex(s.shape, sh, "i")}];`)
    .join(" ");
  let first = 0;
  const bodies = s.groups.map((g) => {
    const { outN, R, base, inner } = split(s.shape, g.axes);
    const start = first;
    first += outN;
    const sc = (g.scale ?? 1) === 1 ? "" : ` * ${f32(g.scale!)}`;
    return `if (t < ${first}u) {
    let o = t - ${start}u;
    let b = ${base};
    ${g.exprs.map((_, k) => `var acc${k} = 0.0;`).join(" ")}
    for (var r = 0u; r < ${R}u; r++) {
      let i = b + ${inner};
      ${loads}
      ${g.exprs.map((x, k) => `acc${k} += ${x};`).join(" ")}
    }
${g.dst.map((d, k) => `    out${d.slot}[${d.offset}u + o] = acc${k}${sc};`).join("\n")}
  }`;
  });
  return `${storageDecls(names, outNames)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${linearIndex(grid)};
  if (t >= ${first}u) { return; }
  ${bodies.join(" else ")}
}`;
}

function groupsSource(s: GroupsSource, grid: [number, number]): string {
  const names = s.inputShapes.map((_, k) => `in${k}`);
  const outNames = Array.from({ length: s.outs }, (_, k) => `out${k}`);
  const vec = groupsVec4(s);
  const v4 = vec4Inputs(s.inputShapes, s.shape, "i");
  const shape = vec ? quarter(s.shape) : s.shape;
  const loads = vec
    ? v4.loads.join(" ")
    : s.inputShapes.map((sh, k) => `let v${k} = in${k}[${broadcastIndex(s.shape, sh, "i")}];`).join(" ");
  const decls = vec
    ? [...v4.decls, ...outputDecls(names.length, outNames)].join("\n")
    : storageDecls(names, outNames);
  const K = Math.max(...s.groups.map((g) => g.exprs.length));
  let first = 0;
  const bodies = s.groups.map((g) => {
    const { outN, R, base, inner } = split(shape, g.axes);
    const start = first;
    first += outN;
    const sc = (g.scale ?? 1) === 1 ? "" : ` * ${f32(g.scale!)}`;
    const e = g.exprs;
    const adds = e.map((x, k) => `acc${k} += ${x};`).join(" ");
    const sums = vec ? [0, 1, 2, 3].map((c) => `{ ${v4.component(c)} ${adds} }`).join("\n      ") : adds;
    return `if (wg >= ${start}u && wg < ${first}u) {
    let o = wg - ${start}u;
    let b = ${base};
    ${e.map((_, k) => `var acc${k} = 0.0;`).join(" ")}
    for (var r = lid; r < ${R}u; r += ${WG_RED}u) {
      let i = b + ${inner};
      ${loads}
      ${sums}
    }
${e.map((_, k) => `    part[${k * WG_RED}u + lid] = acc${k};`).join("\n")}
    workgroupBarrier();
    for (var w = ${WG_RED / 2}u; w > 0u; w = w / 2u) {
      if (lid < w) {
${e.map((_, k) => `        part[${k * WG_RED}u + lid] += part[${k * WG_RED}u + lid + w];`).join("\n")}
      }
      workgroupBarrier();
    }
    if (lid == 0u) {
${g.dst.map((d, k) => `      out${d.slot}[${d.offset}u + o] = part[${k * WG_RED}u]${sc};`).join("\n")}
    }
  }`;
  });
  return `${decls}
var<workgroup> part: array<f32, ${WG_RED * K}>;
@compute @workgroup_size(${WG_RED})
fn main(@builtin(workgroup_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wg = ${linearIndex(grid, 1)};
  ${bodies.join(" else ")}
}`;
}

/**
 * Several sums over one index space in one dispatch: group k writes scale_k · Σ over its axes of each
 * of its expressions (a tree per output, or, when every group is shorter than TREE_MIN, a loop per
 * output). For reductions that read the same tensors along different axes, e.g. a normalisation's
 * per-statistic and per-channel gradient sums.
 */
export function reduceGroups(name: string, s: ReduceGroupsSpec): void {
  const total = s.groups.reduce((a, g) => a + sizes(s.shape, g.axes).outN, 0);
  if (total === 0) return;
  const src: GroupsSource = {
    shape: s.shape,
    inputShapes: s.inputs.map((x) => x.shape),
    outs: s.outs.length,
    groups: s.groups,
  };
  const loop = groupsLoop(src);
  const grid = loop ? grid1D(total) : grid1D(total, 1);
  dispatch(
    kernel(
      `${groupsKey(name, src)}:${grid}:${loop}`,
      loop ? name : `${name}_wg`,
      () => loop ? groupsLoopSource(src, grid) : groupsSource(src, grid),
    ),
    [...s.inputs.map((x) => x.binding), ...s.outs],
    grid,
  );
}
