// CPU reference of the cross-entropy loss (kernels/loss.ts; autograd/ops/loss.ts crossEntropy) in f64,
// forward and backward.

import { softmaxRef } from "./activation.ts";

/** Mean cross-entropy of logits [n, c] against class indices (log-sum-exp with the max subtracted). */
export function crossEntropyRef(x: Float64Array, n: number, c: number, t: ArrayLike<number>): number {
  let loss = 0;
  for (let i = 0; i < n; i++) {
    let m = -Infinity;
    for (let k = 0; k < c; k++) m = Math.max(m, x[i * c + k]);
    let s = 0;
    for (let k = 0; k < c; k++) s += Math.exp(x[i * c + k] - m);
    loss += m + Math.log(s) - x[i * c + t[i]];
  }
  return loss / n;
}

/** Gradient of dLoss · crossEntropyRef(x, …) with respect to the logits: dLoss·(softmax − onehot)/n. */
export function crossEntropyBackwardRef(
  x: Float64Array,
  n: number,
  c: number,
  t: ArrayLike<number>,
  dLoss = 1,
): Float64Array {
  const p = softmaxRef(x, [n, c], 1);
  for (let i = 0; i < n; i++) p[i * c + t[i]] -= 1;
  return p.map((v) => v * dLoss / n);
}
