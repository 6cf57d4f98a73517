// Elementwise kernels: out[i] = expr(v0, v1, ...) with inputs broadcast to the output shape.

import { type Binding, dispatch, grid1D, linearIndex, pipeline, WG } from "./runtime.ts";
import { broadcastIndex, storageDecls } from "./wgsl.ts";

export interface EwInput {
  binding: Binding;
  shape: readonly number[];
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
  const grid = grid1D(n);
  const names = inputs.map((_, k) => `in${k}`);
  const loads = inputs.map((inp, k) => `  let v${k} = in${k}[${broadcastIndex(outShape, inp.shape, "i")}];`);
  const wgsl = `${storageDecls(names, ["out"])}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = ${linearIndex(grid)};
  if (i >= ${n}u) { return; }
${loads.join("\n")}
${inPlace ? "  let o = out[i];\n" : ""}  out[i] = ${expr};
}`;
  dispatch(pipeline(name, wgsl), [...inputs.map((x) => x.binding), out], grid);
}
