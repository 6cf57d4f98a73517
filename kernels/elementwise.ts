// Elementwise kernels: out[i] = expr(v0, v1, ...) with inputs broadcast to the output shape.
//
// `key(name, spec)` names the pipeline; `source(spec)` runs only on a pipeline-cache miss; `elementwise(...)`
// is the launcher on bindings.

import { type Binding, dispatch, FLAT_ARGS, flatIndex, grid1D, kernel, params, WG } from "./runtime.ts";
import { broadcastIndex, f32, paramsDecl, storageDecls } from "./wgsl.ts";

/** The WGSL expressions of the elementwise ops, over `v0`, `v1` (and `o`, the output's value, in place). */
export const EXPR = {
  add: "v0 + v1",
  sub: "v0 - v1",
  mul: "v0 * v1",
  relu: "max(v0, 0.0)",
  /** relu's gradient g·[x > 0] (PyTorch's is 0 at exactly 0). */
  reluBackward: "select(0.0, v0, v1 > 0.0)",
  copy: "v0",
  accumulate: "o + v0",
  scale: (s: number): string => `v0 * ${f32(s)}`,
} as const;

export interface EwInput {
  binding: Binding;
  shape: readonly number[];
}

/** What the WGSL depends on: the expression, the input and output shapes, and in-place accumulation. */
export interface EwSpec {
  expr: string;
  inputShapes: readonly (readonly number[])[];
  outShape: readonly number[];
  inPlace: boolean;
}

export function key(name: string, s: EwSpec): string {
  return `ew:${name}:${s.outShape}:${s.inputShapes.join(";")}:${s.inPlace ? 1 : 0}:${s.expr}`;
}

/** The leading axis of a shape class (any value above 1: the sources never read it). */
const ANY = 2;

/**
 * The class of `s` one pipeline serves: the output's leading axis (the batch) and the inputs' that
 * follow it set to `ANY`, since the sources read the counts that depend on it from their parameters.
 * Rank-1 outputs keep their size (their one axis is also the last, which picks the kernel).
 */
export function shapeClass(s: EwSpec): EwSpec {
  const r = s.outShape.length;
  if (r < 2) return s;
  return {
    ...s,
    outShape: [ANY, ...s.outShape.slice(1)],
    inputShapes: s.inputShapes.map((sh) =>
      sh.length === r && (sh[0] === s.outShape[0] || s.outShape[0] === 1) ? [ANY, ...sh.slice(1)] : sh
    ),
  };
}

/**
 * Whether the vec4 kernel runs `s`: the output's last axis a multiple of 4, and every input either
 * whole along it or broadcast across it. Each invocation then loads and stores vec4s (on lavapipe a
 * per-lane vec4 load costs about half of four f32 loads, measured by the bench's load rows) and
 * evaluates the scalar expression once per component.
 */
export function vec4Applies(s: Pick<EwSpec, "inputShapes" | "outShape">): boolean {
  const last = lastOf(s.outShape);
  return last % 4 === 0 && s.inputShapes.every((sh) => lastOf(sh) === last || lastOf(sh) === 1);
}

const lastOf = (shape: readonly number[]): number => shape[shape.length - 1] ?? 1;

/** The shape with its last axis divided by 4 (where it is not 1): indices of vec4s. */
export const quarter = (shape: readonly number[]): number[] =>
  shape.map((d, k) => (k === shape.length - 1 && d !== 1 ? d / 4 : d));

/** Input k of a vec4 kernel: whole along the last axis (a vec4) or broadcast across it (an f32). */
export const isWide = (shape: readonly number[], outShape: readonly number[]): boolean =>
  lastOf(shape) === lastOf(outShape) && lastOf(outShape) !== 1;

/**
 * WGSL declarations and loads of a vec4 kernel's inputs at vec4 index `i4` (of `outShape`), then the
 * per-component `let vK = ...` lines for component `c`.
 */
export function vec4Inputs(
  inputShapes: readonly (readonly number[])[],
  outShape: readonly number[],
  i4: string,
): { decls: string[]; loads: string[]; component: (c: number) => string } {
  const out4 = quarter(outShape);
  const wide = inputShapes.map((sh) => isWide(sh, outShape));
  return {
    decls: inputShapes.map((_, k) =>
      `@group(0) @binding(${k}) var<storage, read> in${k}: array<${wide[k] ? "vec4<f32>" : "f32"}>;`
    ),
    loads: inputShapes.map((sh, k) => `let w${k} = in${k}[${broadcastIndex(out4, quarter(sh), i4)}];`),
    component: (c) => inputShapes.map((_, k) => `let v${k} = w${k}${wide[k] ? `[${c}]` : ""};`).join(" "),
  };
}

/** Rows shorter than this are not split into chunks. */
const MIN_CHUNK = 64;
/** Enough invocations to keep every core of a CPU adapter and a small GPU busy. */
const ROW_INVOCATIONS = 2048;

/**
 * Chunks of `rows` rows of `length` elements for kernels that walk rows with one invocation per chunk:
 * chunks per row, and the chunk length (a multiple of 4 where the length is).
 */
export function rowChunks(rows: number, length: number): { chunks: number; len: number } {
  const vec = length % 4 === 0 ? 4 : 1;
  const most = Math.max(1, Math.floor(length / MIN_CHUNK));
  const wanted = Math.min(most, Math.max(1, Math.ceil(ROW_INVOCATIONS / rows)));
  const len = Math.ceil(length / wanted / vec) * vec;
  return { chunks: Math.ceil(length / len), len };
}

/** Last axes at least this long are walked by rows when an input is broadcast across them. */
const ROW_MIN = 16;

/**
 * Whether the vec4 kernel walks rows (the output's last axis): some input is broadcast across it (a
 * per-channel weight, a per-sample statistic), so one invocation per chunk of a row loads it once
 * instead of once per vec4 (on lavapipe every storage load is a loop over the SIMD lanes).
 */
export function rowsApply(s: Pick<EwSpec, "inputShapes" | "outShape">): boolean {
  return vec4Applies(s) && lastOf(s.outShape) >= ROW_MIN &&
    s.inputShapes.some((sh) => !isWide(sh, s.outShape));
}

/** The rows (along the last axis, of length L) of `shape` and their chunks (see rowChunks). */
export function rowsOf(
  outShape: readonly number[],
): { rows: number; L: number; chunks: number; len: number } {
  const L = lastOf(outShape);
  const rows = outShape.reduce((a, b) => a * b, 1) / L;
  return { rows, L, ...rowChunks(rows, L) };
}

/** The run-time parameters of every elementwise source: invocations, chunks per row, chunk length / 4. */
const PARAMS = ["count", "chunks", "len4"];

function rowsSource(s: EwSpec): string {
  const L = s.outShape[s.outShape.length - 1];
  const inp = vec4Inputs(s.inputShapes, s.outShape, "i");
  const wide = s.inputShapes.map((sh) => isWide(sh, s.outShape));
  const k = s.inputShapes.length;
  const rowShape = [...s.outShape.slice(0, -1), 1];
  const narrow = s.inputShapes.map((sh, j) =>
    wide[j] ? "" : `  let v${j} = in${j}[${broadcastIndex(rowShape, sh, "row")}];\n`
  ).join("");
  const comps = [0, 1, 2, 3].map((c) =>
    `    { ${wide.map((w, j) => w ? `let v${j} = w${j}[${c}]; ` : "").join("")}${
      s.inPlace ? `let o = ov[${c}]; ` : ""
    }r[${c}] = ${s.expr}; }`
  );
  return `${inp.decls.join("\n")}
@group(0) @binding(${k}) var<storage, read_write> out: array<vec4<f32>>;
${paramsDecl(k + 1, PARAMS)}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let t = ${flatIndex()};
  if (t >= P.count) { return; }
  let row = t / P.chunks;
${narrow}  let start = row * ${L / 4}u + (t % P.chunks) * P.len4;
  let end = min(start + P.len4, row * ${L / 4}u + ${L / 4}u);
  for (var i = start; i < end; i++) {
    ${inp.loads.filter((_, j) => wide[j]).join(" ")}
${s.inPlace ? "    let ov = out[i];\n" : ""}    var r: vec4<f32>;
${comps.join("\n")}
    out[i] = r;
  }
}`;
}

function vec4Source(s: EwSpec): string {
  const inp = vec4Inputs(s.inputShapes, s.outShape, "i");
  const k = s.inputShapes.length;
  const comps = [0, 1, 2, 3].map((c) =>
    `  { ${inp.component(c)}${s.inPlace ? ` let o = ov[${c}];` : ""} r[${c}] = ${s.expr}; }`
  );
  return `${inp.decls.join("\n")}
@group(0) @binding(${k}) var<storage, read_write> out: array<vec4<f32>>;
${paramsDecl(k + 1, PARAMS)}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let i = ${flatIndex()};
  if (i >= P.count) { return; }
  ${inp.loads.join(" ")}
${s.inPlace ? "  let ov = out[i];\n" : ""}  var r: vec4<f32>;
${comps.join("\n")}
  out[i] = r;
}`;
}

export function source(s: EwSpec): string {
  if (rowsApply(s)) return rowsSource(s);
  if (vec4Applies(s)) return vec4Source(s);
  const names = s.inputShapes.map((_, k) => `in${k}`);
  const loads = s.inputShapes.map((shape, k) =>
    `  let v${k} = in${k}[${broadcastIndex(s.outShape, shape, "i")}];`
  );
  return `${storageDecls(names, ["out"])}
${paramsDecl(names.length + 1, PARAMS)}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let i = ${flatIndex()};
  if (i >= P.count) { return; }
${loads.join("\n")}
${s.inPlace ? "  let o = out[i];\n" : ""}  out[i] = ${s.expr};
}`;
}

/**
 * Records `out = expr` where `expr` is WGSL over `v0..vn` (the inputs at this element, broadcast to
 * `outShape`). With `inPlace`, `o` names the current output value (e.g. `o + v0` accumulates).
 */
export function elementwise(
  name: string,
  expr: string,
  inputs: EwInput[],
  out: Binding,
  outShape: readonly number[],
  inPlace = false,
): void {
  const n = outShape.reduce((a, b) => a * b, 1);
  if (n === 0) return;
  const spec: EwSpec = { expr, inputShapes: inputs.map((x) => x.shape), outShape, inPlace };
  const cls = shapeClass(spec);
  const rows = rowsApply(spec) ? rowsOf(outShape) : null;
  const invocations = rows ? rows.rows * rows.chunks : vec4Applies(spec) ? n / 4 : n;
  dispatch(
    kernel(key(name, cls), name, () => source(cls)),
    [...inputs.map((x) => x.binding), out, params(invocations, rows?.chunks ?? 1, (rows?.len ?? 4) / 4)],
    grid1D(invocations),
  );
}

/** dst += src in place, `src` broadcast to `shape` (gradient accumulation, addInPlace). */
export function accumulate(name: string, dst: Binding, src: EwInput, shape: readonly number[]): void {
  elementwise(name, EXPR.accumulate, [src], dst, shape, true);
}
