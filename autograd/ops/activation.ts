// Differentiable activations: exact GELU (nn.GELU(), erf form) and softmax along any dimension.

import { geluBackward, geluForward, softmaxBackward, softmaxForward } from "../../kernels/activation.ts";
import { empty, numel, record, type Tensor } from "../tensor.ts";

/** gelu(x) = x·Φ(x) = ½·x·(1 + erf(x/√2)), like torch.nn.functional.gelu (approximate="none"). */
export function gelu(x: Tensor): Tensor {
  const out = empty(x.shape);
  geluForward(x.binding(), out.binding(), x.size);
  return record(out, [x], (g) => {
    const dx = empty(x.shape);
    geluBackward(g.binding(), x.binding(), dx.binding(), x.size);
    return [dx];
  });
}

/** Softmax along `dim` (negative counts from the end), stable for large inputs (max subtracted). */
export function softmax(x: Tensor, dim: number): Tensor {
  const d = dim < 0 ? dim + x.rank : dim;
  if (!Number.isInteger(d) || d < 0 || d >= Math.max(x.rank, 1)) {
    throw new Error(`softmax: dim ${dim} out of range for ${x.describe()}`);
  }
  const shape = x.rank === 0 ? [1] : x.shape;
  const dims = { outer: numel(shape.slice(0, d)), d: shape[d], inner: numel(shape.slice(d + 1)) };
  const out = empty(x.shape);
  softmaxForward(x.binding(), out.binding(), dims);
  // the backward reads y = out, which lives as long as this node (disposing out drops the node)
  return record(out, [x], (g) => {
    const dx = empty(x.shape);
    softmaxBackward(g.binding(), out.binding(), dx.binding(), dims);
    return [dx];
  });
}
