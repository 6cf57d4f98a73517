// Sum reductions over any set of axes, of one or several WGSL expressions at once, with inputs
// broadcast like the elementwise kernels (norm backward sums, bias gradients, broadcast gradients).
// Long reductions use one workgroup per output (tree in workgroup memory); otherwise one invocation
// per output loops over its elements. `key(name, spec)` names the pipeline and `source(spec)` runs only on a
// pipeline-cache miss; `reduceExprs` is the launcher on bindings.
//
// One pipeline serves every batch size: the key and the source are built from the shape class (the
// leading axis, the batch or chunks over it, set to the nominal batch), and the counts that follow it (outputs,
// elements per output, where each group's outputs go) and the scales are read from the parameters `P`.

import { NOMINAL_BATCH } from "./batch_class.ts";
import { type EwInput, quarter, vec4Applies, vec4Inputs } from "./elementwise.ts";
import { type Binding, dispatch, FLAT_ARGS, flatIndex, grid1D, kernel, params, WG } from "./runtime.ts";
import { broadcastIndex, divU, modU, paramsDecl, storageDecls, stridesOf } from "./wgsl.ts";

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

/** What a reduction's WGSL depends on (the bindings, counts and scale aside): a shape class. */
export interface ReduceSource {
  shape: readonly number[];
  axes: readonly number[];
  inputShapes: readonly (readonly number[])[];
  exprs: readonly string[];
}

/**
 * The class of an index space and its inputs: the leading axis (the batch, or chunks over it) and the
 * inputs' that follow it set to the nominal batch, so that the tree or the loop is chosen as at the
 * training batch for every batch (the sources never read this value). Rank-1 spaces keep their size.
 */
export function shapeClass(
  shape: readonly number[],
  inputShapes: readonly (readonly number[])[],
): { shape: number[]; inputShapes: number[][] } {
  const r = shape.length;
  if (r < 2) return { shape: [...shape], inputShapes: inputShapes.map((sh) => [...sh]) };
  const follows = (sh: readonly number[]) => sh.length === r && (sh[0] === shape[0] || shape[0] === 1);
  return {
    shape: [NOMINAL_BATCH, ...shape.slice(1)],
    inputShapes: inputShapes.map((sh) => follows(sh) ? [NOMINAL_BATCH, ...sh.slice(1)] : [...sh]),
  };
}

/** The u32 bits of `x` rounded to f32 (a scale in `P`, read back with `bitcast<f32>`). */
export function f32Bits(x: number): number {
  return new Uint32Array(Float32Array.of(x).buffer)[0];
}

/** Writable f32 arrays `names`, bound after `first` inputs (beside the vec4 kernels' input declarations). */
export const outputDecls = (first: number, names: string[]): string[] =>
  names.map((n, j) => `@group(0) @binding(${first + j}) var<storage, read_write> ${n}: array<f32>;`);

/** Whether a reduction of `R` elements per output runs one workgroup (tree) per output. */
const usesTree = (R: number) => R >= TREE_MIN;

/** `main`'s parameters for a tree kernel: `flatIndex(1)` is then the workgroup's number. */
const TREE_ARGS = "@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, " +
  "@builtin(local_invocation_index) lid: u32";

/** The tree sum of `part` (K slices of WG_RED) into `part[k · WG_RED]`, indented by `pad`. */
function treeSum(K: number, pad: string): string {
  const adds = Array.from(
    { length: K },
    (_, k) => `${pad}    part[${k * WG_RED}u + lid] += part[${k * WG_RED}u + lid + w];`,
  );
  return `${pad}workgroupBarrier();
${pad}for (var w = ${WG_RED / 2}u; w > 0u; w = w / 2u) {
${pad}  if (lid < w) {
${adds.join("\n")}
${pad}  }
${pad}  workgroupBarrier();
${pad}}`;
}

export function key(name: string, s: ReduceSource): string {
  // the expressions go last, joined by a character WGSL does not use
  return `red:${name}:${s.shape}:${s.axes}:${s.inputShapes.join(";")}:${s.exprs.join("#")}`;
}

/** The run-time parameters of `reduceExprs`: outputs, elements per output (of the index space read), scale. */
const RED_PARAMS = ["outN", "R", "scale"];

/** Whether the tree kernel reads vec4s: the summed last axis allows (as reduceGroups). */
function treeVec4(s: ReduceSource): boolean {
  return vec4Applies({ inputShapes: s.inputShapes, outShape: s.shape }) &&
    s.axes.includes(s.shape.length - 1);
}

/** Whether the kernel of (the class) `s` reads vec4s: then it indexes `quarter(shape)`. */
function readsVec4(s: ReduceSource): boolean {
  return usesTree(sizes(s.shape, s.axes).R) ? treeVec4(s) : sumsVec4(s);
}

function treeSource(s: ReduceSource): string {
  const K = s.exprs.length;
  const names = s.inputShapes.map((_, k) => `in${k}`);
  const outNames = s.exprs.map((_, k) => `out${k}`);
  const adds = s.exprs.map((e, k) => `acc${k} += ${e};`).join(" ");
  const vec = treeVec4(s);
  const v4 = vec4Inputs(s.inputShapes, s.shape, "i");
  const q = split(vec ? quarter(s.shape) : s.shape, s.axes);
  const loads = s.inputShapes.map((sh, k) => `let v${k} = in${k}[${broadcastIndex(s.shape, sh, "i")}];`);
  const body = vec
    ? `${v4.loads.join(" ")}\n      ${[0, 1, 2, 3].map((c) => `{ ${v4.component(c)} ${adds} }`).join(" ")}`
    : `${loads.join(" ")}\n      ${adds}`;
  return `${
    vec ? [...v4.decls, ...outputDecls(names.length, outNames)].join("\n") : storageDecls(names, outNames)
  }
${paramsDecl(names.length + K, RED_PARAMS)}
var<workgroup> part: array<f32, ${WG_RED * K}>;
@compute @workgroup_size(${WG_RED})
fn main(${TREE_ARGS}) {
  let o = ${flatIndex(1)};
  let valid = o < P.outN;
  ${s.exprs.map((_, k) => `var acc${k} = 0.0;`).join(" ")}
  if (valid) {
    let b = ${q.base};
    let R = P.R;
    for (var r = lid; r < R; r += ${WG_RED}u) {
      let i = b + ${q.inner};
      ${body}
    }
  }
${s.exprs.map((_, k) => `  part[${k * WG_RED}u + lid] = acc${k};`).join("\n")}
${treeSum(K, "  ")}
  if (lid == 0u && valid) {
${s.exprs.map((_, k) => `    out${k}[o] = part[${k * WG_RED}u] * bitcast<f32>(P.scale);`).join("\n")}
  }
}`;
}

/** Four neighbouring outputs per invocation, read and written as vec4 (see sumsVec4). */
function sumsVec4Source(s: ReduceSource): string {
  const q = split(quarter(s.shape), s.axes);
  return `${storageDecls(["in0"], ["out0"], "array<vec4<f32>>")}
${paramsDecl(2, RED_PARAMS)}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let o = ${flatIndex()};
  if (o >= P.outN) { return; }
  let b = ${q.base};
  var acc0 = vec4<f32>(0.0);
  let R = P.R;
  for (var r = 0u; r < R; r++) { acc0 += in0[b + ${q.inner}]; }
  out0[o] = acc0 * bitcast<f32>(P.scale);
}`;
}

function loopSource(s: ReduceSource): string {
  const { base, inner } = split(s.shape, s.axes);
  const names = s.inputShapes.map((_, k) => `in${k}`);
  const outNames = s.exprs.map((_, k) => `out${k}`);
  const loads = s.inputShapes.map((sh, k) => `let v${k} = in${k}[${broadcastIndex(s.shape, sh, "i")}];`);
  return `${storageDecls(names, outNames)}
${paramsDecl(names.length + outNames.length, RED_PARAMS)}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let o = ${flatIndex()};
  if (o >= P.outN) { return; }
  let b = ${base};
  ${s.exprs.map((_, k) => `var acc${k} = 0.0;`).join(" ")}
  let R = P.R;
  for (var r = 0u; r < R; r++) {
    let i = b + ${inner};
    ${loads.join(" ")}
    ${s.exprs.map((e, k) => `acc${k} += ${e};`).join(" ")}
  }
${s.exprs.map((_, k) => `  out${k}[o] = acc${k} * bitcast<f32>(P.scale);`).join("\n")}
}`;
}

export function source(s: ReduceSource): string {
  if (usesTree(sizes(s.shape, s.axes).R)) return treeSource(s);
  return sumsVec4(s) ? sumsVec4Source(s) : loopSource(s);
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
  if (sizes(s.shape, s.axes).outN === 0) return;
  const cls = shapeClass(s.shape, s.inputs.map((x) => x.shape));
  const src: ReduceSource = { ...cls, axes: s.axes, exprs: s.exprs };
  const tree = usesTree(sizes(cls.shape, s.axes).R);
  const { outN, R } = sizes(readsVec4(src) ? quarter(s.shape) : s.shape, s.axes);
  dispatch(
    kernel(key(name, src), tree ? `${name}_wg` : name, () => source(src)),
    [...s.inputs.map((x) => x.binding), ...s.outs, params(outN, R, f32Bits(s.scale ?? 1))],
    tree ? grid1D(outN, 1) : grid1D(outN),
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

/** What `reduceGroups`' WGSL depends on: a shape class; the offsets and scales are read from `P`. */
interface GroupsSource {
  shape: readonly number[];
  inputShapes: readonly (readonly number[])[];
  outs: number;
  groups: { axes: readonly number[]; exprs: readonly string[]; slots: readonly number[] }[];
}

function groupsKey(name: string, s: GroupsSource, loop: boolean): string {
  const g = s.groups.map((r) => `${r.axes}|${r.slots}|${r.exprs.join("#")}`);
  return `redg:${name}:${s.shape}:${s.inputShapes.join(";")}:${s.outs}:${g.join("&")}:${loop}`;
}

/**
 * The run-time parameters of `reduceGroups`, per group g: `e<g>` the end of its outputs in the numbering
 * across groups, `r<g>` its elements per output, `s<g>` its scale's bits, `d<g>_<k>` the offset of its
 * k-th expression's outputs.
 */
function groupsParamNames(s: GroupsSource): string[] {
  return s.groups.flatMap((g, i) => [`e${i}`, `r${i}`, `s${i}`, ...g.slots.map((_, k) => `d${i}_${k}`)]);
}

function groupsParams(shape: readonly number[], groups: ReduceGroup[]): number[] {
  let end = 0;
  return groups.flatMap((g) => {
    const { outN, R } = sizes(shape, g.axes);
    end += outN;
    return [end, R, f32Bits(g.scale ?? 1), ...g.dst.map((d) => d.offset)];
  });
}

/**
 * Whether `reduceGroups` reads vec4s: every group sums the last axis, and the inputs are whole along
 * it or broadcast across it (as the vec4 elementwise kernel; each expression runs per component).
 */
function groupsVec4(s: Pick<GroupsSource, "shape" | "inputShapes" | "groups">): boolean {
  const last = s.shape.length - 1;
  return vec4Applies({ inputShapes: s.inputShapes, outShape: s.shape }) &&
    s.groups.every((g) => g.axes.includes(last));
}

/** Whether every group of a `reduceGroups` is short enough for one invocation per output (no tree). */
function groupsLoop(s: Pick<GroupsSource, "shape" | "groups">): boolean {
  return s.groups.every((g) => !usesTree(sizes(s.shape, g.axes).R));
}

/** The branch condition of group `i` on the output (or workgroup) number `t`, in an else-if chain. */
const groupStart = (i: number): string => i === 0 ? "0u" : `P.e${i - 1}`;

/** WGSL of `reduceGroups` when every group is short: one invocation per output, numbered as the trees. */
function groupsLoopSource(s: GroupsSource): string {
  const names = s.inputShapes.map((_, k) => `in${k}`);
  const outNames = Array.from({ length: s.outs }, (_, k) => `out${k}`);
  const loads = s.inputShapes.map((sh, k) => `let v${k} = in${k}[${broadcastIndex(s.shape, sh, "i")}];`)
    .join(" ");
  const bodies = s.groups.map((g, gi) => {
    const { base, inner } = split(s.shape, g.axes);
    return `if (t < P.e${gi}) {
    let o = t - ${groupStart(gi)};
    let b = ${base};
    ${g.exprs.map((_, k) => `var acc${k} = 0.0;`).join(" ")}
    let R = P.r${gi};
    for (var r = 0u; r < R; r++) {
      let i = b + ${inner};
      ${loads}
      ${g.exprs.map((x, k) => `acc${k} += ${x};`).join(" ")}
    }
${
      g.slots.map((slot, k) => `    out${slot}[P.d${gi}_${k} + o] = acc${k} * bitcast<f32>(P.s${gi});`).join(
        "\n",
      )
    }
  }`;
  });
  return `${storageDecls(names, outNames)}
${paramsDecl(names.length + outNames.length, groupsParamNames(s))}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let t = ${flatIndex()};
  ${bodies.join(" else ")}
}`;
}

/**
 * WGSL of `reduceGroups`: the workgroups are numbered across the groups (group 0's outputs first), and
 * each runs the tree reduction of one output of its group. The branch on the workgroup's number is
 * uniform, so the barriers inside it are valid.
 */
function groupsSource(s: GroupsSource): string {
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
  const bodies = s.groups.map((g, gi) => {
    const { base, inner } = split(shape, g.axes);
    const e = g.exprs;
    const adds = e.map((x, k) => `acc${k} += ${x};`).join(" ");
    const sums = vec ? [0, 1, 2, 3].map((c) => `{ ${v4.component(c)} ${adds} }`).join("\n      ") : adds;
    return `if (wg < P.e${gi}) {
    let o = wg - ${groupStart(gi)};
    let b = ${base};
    ${e.map((_, k) => `var acc${k} = 0.0;`).join(" ")}
    let R = P.r${gi};
    for (var r = lid; r < R; r += ${WG_RED}u) {
      let i = b + ${inner};
      ${loads}
      ${sums}
    }
${e.map((_, k) => `    part[${k * WG_RED}u + lid] = acc${k};`).join("\n")}
${treeSum(e.length, "    ")}
    if (lid == 0u) {
${
      g.slots.map((slot, k) =>
        `      out${slot}[P.d${gi}_${k} + o] = part[${k * WG_RED}u] * bitcast<f32>(P.s${gi});`
      )
        .join("\n")
    }
    }
  }`;
  });
  return `${decls}
${paramsDecl(names.length + outNames.length, groupsParamNames(s))}
var<workgroup> part: array<f32, ${WG_RED * K}>;
@compute @workgroup_size(${WG_RED})
fn main(${TREE_ARGS}) {
  let wg = ${flatIndex(1)};
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
  const cls = shapeClass(s.shape, s.inputs.map((x) => x.shape));
  const src: GroupsSource = {
    ...cls,
    outs: s.outs.length,
    groups: s.groups.map((g) => ({ axes: g.axes, exprs: g.exprs, slots: g.dst.map((d) => d.slot) })),
  };
  const loop = groupsLoop(src);
  const space = !loop && groupsVec4(src) ? quarter(s.shape) : s.shape;
  dispatch(
    kernel(
      groupsKey(name, src, loop),
      loop ? name : `${name}_wg`,
      () => loop ? groupsLoopSource(src) : groupsSource(src),
    ),
    [...s.inputs.map((x) => x.binding), ...s.outs, params(...groupsParams(space, s.groups))],
    loop ? grid1D(total) : grid1D(total, 1),
  );
}

// ---------------------------------------------------------------- split reductions' partials, one dispatch

/** One block of partials for `sumChunks`: [chunks, n] floats in `src`, summed over the chunks into `dst`. */
export interface ChunkPartials {
  src: Binding;
  /** Sums (floats per chunk). */
  n: number;
  /** Where the n sums go (n floats). */
  dst: Binding;
}

/**
 * dst_k[i] = Σ_r src_k[r · n_k + i] over r = 0..chunks−1, for every block k, in one dispatch (e.g. a
 * weight gradient's and its bias gradient's partials from one split GEMM). Each sum adds the chunks in
 * order from 0.0, as `sumAxes(src, [chunks, n], [0], dst)` does, so the results are the same bits. A
 * block whose n is a multiple of 4 is read and written as vec4 (four sums per invocation). The source
 * depends only on which blocks are vec4: the chunks (they follow the batch) and the sizes are read from
 * `P`, so one pipeline serves every shape and batch.
 */
export function sumChunks(chunks: number, parts: ChunkPartials[]): void {
  const vec = parts.map((p) => p.n % 4 === 0);
  const widths = parts.map((p, k) => vec[k] ? p.n / 4 : p.n);
  const total = widths.reduce((a, b) => a + b, 0);
  if (total === 0) return;
  const K = parts.length;
  let end = 0;
  const ends = widths.map((w) => (end += w)); // group k's invocations end at ends[k]
  const names = ["chunks", ...parts.flatMap((_, k) => [`e${k}`, `n${k}`])];
  const type = (k: number) => vec[k] ? "vec4<f32>" : "f32";
  const pipe = kernel(`sum_chunks:${vec.map((v) => v ? 4 : 1).join(",")}`, "sum_chunks", () => {
    const decls = [
      ...parts.map((_, k) => `@group(0) @binding(${k}) var<storage, read> in${k}: array<${type(k)}>;`),
      ...parts.map((_, k) =>
        `@group(0) @binding(${K + k}) var<storage, read_write> out${k}: array<${type(k)}>;`
      ),
    ];
    const bodies = parts.map((_, k) =>
      `if (t < P.e${k}) {
    let o = t - ${k === 0 ? "0u" : `P.e${k - 1}`};
    var acc = ${type(k)}(0.0);
    for (var r = 0u; r < P.chunks; r++) { acc += in${k}[r * P.n${k} + o]; }
    out${k}[o] = acc;
  }`
    );
    return `${decls.join("\n")}
${paramsDecl(2 * K, names)}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let t = ${flatIndex()};
  ${bodies.join(" else ")}
}`;
  });
  dispatch(
    pipe,
    [
      ...parts.map((p) => p.src),
      ...parts.map((p) => p.dst),
      params(chunks, ...ends.flatMap((e, k) => [e, widths[k]])),
    ],
    grid1D(total),
  );
}
