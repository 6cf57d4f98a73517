// mapTensors: one elementwise kernel over broadcast tensors into a new tensor, with no tape entry. A leaf
// module shared by the elementwise and reduction ops (and their backward rules), so neither imports the other.

import { elementwise } from "../../kernels/elementwise.ts";
import { broadcastShapes } from "../../kernels/wgsl.ts";
import { empty, type Tensor } from "../tensor.ts";

/** Runs an elementwise kernel over `inputs` (broadcast together) into a new tensor. */
export function mapTensors(
  name: string,
  expr: string,
  inputs: Tensor[],
  outShape?: readonly number[],
): Tensor {
  const shape = outShape ?? inputs.map((t) => t.shape).reduce((a, b) => broadcastShapes(name, a, b));
  const out = empty(shape);
  elementwise(
    name,
    expr,
    inputs.map((t) => ({ binding: t.binding(), shape: t.shape })),
    out.binding(),
    shape,
  );
  return out;
}
