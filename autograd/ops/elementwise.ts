// Differentiable elementwise ops with numpy broadcasting (bias and per-channel scale are broadcasts).

import { accumulate, EXPR } from "../../kernels/elementwise.ts";
import { broadcastShapes } from "../../kernels/wgsl.ts";
import { record, sameShape, type Tensor } from "../tensor.ts";
import { mapTensors } from "./map.ts";
import { sumTo } from "./reduce.ts";

/** dst += src (src broadcast to dst), recorded on no tape. */
export function addInPlace(dst: Tensor, src: Tensor): void {
  broadcastShapes("addInPlace", dst.shape, src.shape);
  accumulate("add_inplace", dst.binding(), { binding: src.binding(), shape: src.shape }, dst.shape);
}

/** The gradient of a broadcast input: `g` summed down to `shape`. */
function unbroadcast(g: Tensor, shape: readonly number[]): Tensor {
  return sameShape(g.shape, shape) ? g : sumTo(g, shape);
}

export function add(a: Tensor, b: Tensor): Tensor {
  const out = mapTensors("add", EXPR.add, [a, b]);
  return record(out, [a, b], (g) => [
    a.requiresGrad ? unbroadcast(g, a.shape) : null,
    b.requiresGrad ? unbroadcast(g, b.shape) : null,
  ]);
}

export function sub(a: Tensor, b: Tensor): Tensor {
  const out = mapTensors("sub", EXPR.sub, [a, b]);
  return record(out, [a, b], (g) => [
    a.requiresGrad ? unbroadcast(g, a.shape) : null,
    b.requiresGrad ? unbroadcast(neg(g), b.shape) : null,
  ]);
}

export function mul(a: Tensor, b: Tensor): Tensor {
  const out = mapTensors("mul", EXPR.mul, [a, b]);
  return record(out, [a, b], (g) => [
    a.requiresGrad ? reduceProduct(g, b, a.shape) : null,
    b.requiresGrad ? reduceProduct(g, a, b.shape) : null,
  ]);
}

/** sum-to-`shape` of g * other, without keeping the full-size product when no reduction is needed. */
function reduceProduct(g: Tensor, other: Tensor, shape: readonly number[]): Tensor {
  const prod = mapTensors("mul", EXPR.mul, [g, other]);
  if (sameShape(prod.shape, shape)) return prod;
  const r = sumTo(prod, shape);
  prod.dispose();
  return r;
}

/** x * s for a constant s. */
export function scale(x: Tensor, s: number): Tensor {
  const out = mapTensors("scale", EXPR.scale(s), [x]);
  return record(out, [x], (g) => [scale(g, s)]);
}

export function neg(x: Tensor): Tensor {
  return scale(x, -1);
}

export function relu(x: Tensor): Tensor {
  const out = mapTensors("relu", EXPR.relu, [x]);
  return record(out, [x], (g) => [mapTensors("relu_backward", EXPR.reluBackward, [g, x])]);
}
