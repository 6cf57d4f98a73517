// Differentiable elementwise ops with numpy broadcasting (bias and per-channel scale are broadcasts).

import { elementwise } from "../../kernels/elementwise.ts";
import { broadcastShapes, f32 } from "../../kernels/wgsl.ts";
import { record, sameShape, type Tensor } from "../tensor.ts";
import { mapTensors } from "./map.ts";
import { sumTo } from "./reduce.ts";

/** dst += src (src broadcast to dst), recorded on no tape. */
export function addInPlace(dst: Tensor, src: Tensor): void {
  broadcastShapes("addInPlace", dst.shape, src.shape);
  elementwise(
    "add_inplace",
    "o + v0",
    [{ binding: src.binding(), shape: src.shape }],
    dst.binding(),
    dst.shape,
    true,
  );
}

/** The gradient of a broadcast input: `g` summed down to `shape`. */
function unbroadcast(g: Tensor, shape: readonly number[]): Tensor {
  return sameShape(g.shape, shape) ? g : sumTo(g, shape);
}

export function add(a: Tensor, b: Tensor): Tensor {
  const out = mapTensors("add", "v0 + v1", [a, b]);
  return record(out, [a, b], (g) => [
    a.requiresGrad ? unbroadcast(g, a.shape) : null,
    b.requiresGrad ? unbroadcast(g, b.shape) : null,
  ]);
}

export function sub(a: Tensor, b: Tensor): Tensor {
  const out = mapTensors("sub", "v0 - v1", [a, b]);
  return record(out, [a, b], (g) => [
    a.requiresGrad ? unbroadcast(g, a.shape) : null,
    b.requiresGrad ? unbroadcast(neg(g), b.shape) : null,
  ]);
}

export function mul(a: Tensor, b: Tensor): Tensor {
  const out = mapTensors("mul", "v0 * v1", [a, b]);
  return record(out, [a, b], (g) => [
    a.requiresGrad ? reduceProduct(g, b, a.shape) : null,
    b.requiresGrad ? reduceProduct(g, a, b.shape) : null,
  ]);
}

/** sum-to-`shape` of g * other, without keeping the full-size product when no reduction is needed. */
function reduceProduct(g: Tensor, other: Tensor, shape: readonly number[]): Tensor {
  const prod = mapTensors("mul", "v0 * v1", [g, other]);
  if (sameShape(prod.shape, shape)) return prod;
  const r = sumTo(prod, shape);
  prod.dispose();
  return r;
}

/** x * s for a constant s. */
export function scale(x: Tensor, s: number): Tensor {
  const out = mapTensors("scale", `v0 * ${f32(s)}`, [x]);
  return record(out, [x], (g) => [scale(g, s)]);
}

export function neg(x: Tensor): Tensor {
  return scale(x, -1);
}

export function relu(x: Tensor): Tensor {
  const out = mapTensors("relu", "max(v0, 0.0)", [x]);
  // PyTorch's gradient at exactly 0 is 0
  return record(out, [x], (g) => [mapTensors("relu_backward", "select(0.0, v0, v1 > 0.0)", [g, x])]);
}
