// Differentiable fully connected layer (torch.nn.functional.linear): y = x·wᵀ + b.

import type { Tensor } from "../tensor.ts";
import { add } from "./elementwise.ts";
import { matmulT } from "./matmul.ts";
import { reshape } from "./shape.ts";

/**
 * y = x·wᵀ + b for `x` [N, in] (or [..., in]: leading dims are flattened and restored), weight `w`
 * [out, in] (PyTorch's layout) and optional bias `b` [out].
 */
export function linear(x: Tensor, w: Tensor, b?: Tensor | null): Tensor {
  const op = "linear";
  if (w.rank !== 2) throw new Error(`${op}: weight must be [out, in], got ${w.describe()}`);
  const [outF, inF] = w.shape;
  if (x.rank < 1 || x.shape[x.rank - 1] !== inF) {
    throw new Error(
      `${op}: input ${x.describe()} does not match weight ${w.describe()} (expected [..., ${inF}])`,
    );
  }
  if (b && (b.rank !== 1 || b.shape[0] !== outF)) {
    throw new Error(`${op}: bias ${b.describe()} does not match weight ${w.describe()} (expected [${outF}])`);
  }
  const flat = x.rank === 2 ? x : reshape(x, [-1, inF]);
  let y = matmulT(flat, w, { transB: true });
  if (b) y = add(y, b);
  return x.rank === 2 ? y : reshape(y, [...x.shape.slice(0, -1), outF]);
}
