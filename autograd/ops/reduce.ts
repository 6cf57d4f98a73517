// Differentiable sum and mean over axes, and sumTo (the reduction behind broadcast gradients).

import { sumAxes } from "../../kernels/reduce.ts";
import { EXPR } from "../../kernels/elementwise.ts";
import { empty, numel, record, type Tensor, view } from "../tensor.ts";
import { mapTensors } from "./map.ts";
import { reshape } from "./shape.ts";

export interface ReduceOptions {
  /** Axes to reduce (negative counts from the end); all when omitted. */
  dim?: number | number[];
  keepDim?: boolean;
}

function normAxes(op: string, t: Tensor, dim?: number | number[]): number[] {
  if (dim === undefined) return t.shape.map((_, i) => i);
  const axes = (Array.isArray(dim) ? dim : [dim]).map((d) => (d < 0 ? d + t.rank : d));
  for (const a of axes) {
    if (a < 0 || a >= t.rank) throw new Error(`${op}: dim ${a} out of range for ${t.describe()}`);
  }
  return [...new Set(axes)].sort((a, b) => a - b);
}

function reduce(op: string, x: Tensor, opts: ReduceOptions, mean: boolean): Tensor {
  const axes = normAxes(op, x, opts.dim);
  const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const outShape = opts.keepDim ? kept : x.shape.filter((_, i) => !axes.includes(i));
  const count = axes.reduce((a, i) => a * x.shape[i], 1);
  const s = mean ? 1 / count : 1;
  const out = empty(outShape);
  sumAxes(x.binding(), x.shape, axes, out.binding(), s);
  return record(out, [x], (g) => {
    const gk = view(g, kept);
    const r = mapTensors(
      mean ? "mean_backward" : "sum_backward",
      mean ? EXPR.scale(s) : EXPR.copy,
      [gk],
      x.shape,
    );
    gk.dispose();
    return [r];
  });
}

export function sum(x: Tensor, opts: ReduceOptions = {}): Tensor {
  return reduce("sum", x, opts, false);
}

export function mean(x: Tensor, opts: ReduceOptions = {}): Tensor {
  return reduce("mean", x, opts, true);
}

/** Sums `x` down to `shape` (the inverse of broadcasting `shape` to `x.shape`). */
export function sumTo(x: Tensor, shape: readonly number[]): Tensor {
  const lead = x.rank - shape.length;
  const axes: number[] = [];
  x.shape.forEach((d, i) => {
    const target = i < lead ? 1 : shape[i - lead];
    if (target === 1 && (d !== 1 || i < lead)) axes.push(i);
    else if (target !== d) throw new Error(`sumTo: cannot reduce ${x.describe()} to [${shape.join(", ")}]`);
  });
  const out = sum(x, { dim: axes, keepDim: true });
  if (numel(shape) !== out.size) throw new Error("sumTo: size mismatch");
  return reshape(out, shape);
}
