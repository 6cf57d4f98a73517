// Elementwise kernels: out[i] = expr(v0, v1, ...) with inputs broadcast to the output shape.
//
// `key(name, spec)` names the pipeline; `source(spec)` runs only on a pipeline-cache miss; `elementwise(...)`
// is the launcher on bindings.

import { type Binding, dispatch, grid1D, kernel, linearIndex, WG } from "./runtime.ts";
import { broadcastIndex, f32, storageDecls } from "./wgsl.ts";

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

export function source(s: EwSpec): string {
  const n = s.outShape.reduce((a, b) => a * b, 1);
  const grid = grid1D(n);
  const names = s.inputShapes.map((_, k) => `in${k}`);
  const loads = s.inputShapes.map((shape, k) =>
    `  let v${k} = in${k}[${broadcastIndex(s.outShape, shape, "i")}];`
  );
  return `${storageDecls(names, ["out"])}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = ${linearIndex(grid)};
  if (i >= ${n}u) { return; }
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
  dispatch(
    kernel(key(name, spec), name, () => source(spec)),
    [...inputs.map((x) => x.binding), out],
    grid1D(n),
  );
}

/** dst += src in place, `src` broadcast to `shape` (gradient accumulation, addInPlace). */
export function accumulate(name: string, dst: Binding, src: EwInput, shape: readonly number[]): void {
  elementwise(name, EXPR.accumulate, [src], dst, shape, true);
}
