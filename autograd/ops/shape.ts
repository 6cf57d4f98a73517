// Views that change the shape without copying: reshape and flatten.

import { numel, record, type Tensor, view } from "../tensor.ts";

/** A view of `x` with another shape of the same size; one dimension may be -1. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const known = shape.filter((d) => d !== -1);
  const inferred = shape.length - known.length;
  if (inferred > 1) throw new Error(`reshape: at most one -1 in [${shape.join(", ")}]`);
  const resolved = inferred ? shape.map((d) => (d === -1 ? x.size / numel(known) : d)) : [...shape];
  if (!resolved.every(Number.isInteger) || numel(resolved) !== x.size) {
    throw new Error(`reshape: cannot reshape ${x.describe()} to [${shape.join(", ")}]`);
  }
  const out = view(x, resolved);
  return record(out, [x], (g) => [view(g, x.shape)]);
}

/** Flattens dims startDim..endDim into one (torch.flatten). */
export function flatten(x: Tensor, startDim = 0, endDim = -1): Tensor {
  const s = startDim < 0 ? startDim + x.rank : startDim;
  const e = endDim < 0 ? endDim + x.rank : endDim;
  if (x.rank === 0) return reshape(x, [1]);
  if (s < 0 || e >= x.rank || s > e) {
    throw new Error(`flatten: bad dims ${startDim}..${endDim} for ${x.describe()}`);
  }
  const mid = x.shape.slice(s, e + 1).reduce((a, b) => a * b, 1);
  return reshape(x, [...x.shape.slice(0, s), mid, ...x.shape.slice(e + 1)]);
}
