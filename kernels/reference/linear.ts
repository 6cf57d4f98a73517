// CPU reference of the linear layer (autograd/ops/linear.ts linear: a GEMM of kernels/matmul.ts with
// the weight transposed, plus a bias) in f64, forward and backward.

import { matmulBackwardRef } from "./matmul.ts";

/** x·wᵀ + b for x [rows, k], w [m, k]. */
export function linearRef(x: Float64Array, w: Float64Array, b: Float64Array | null, k: number): Float64Array {
  const rows = x.length / k, m = w.length / k;
  const y = new Float64Array(rows * m);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < m; j++) {
      let s = b ? b[j] : 0;
      for (let q = 0; q < k; q++) s += x[i * k + q] * w[j * k + q];
      y[i * m + j] = s;
    }
  }
  return y;
}

/** Gradients of sum(linearRef(x, w, b, k) · dy) with respect to x, w and b. */
export function linearBackwardRef(
  x: Float64Array,
  w: Float64Array,
  dy: Float64Array,
  k: number,
): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const m = w.length / k, rows = x.length / k;
  const d = { batch: 1, m: rows, n: m, k, transA: false, transB: true, batchA: false, batchB: false };
  const g = matmulBackwardRef(x, w, dy, d);
  const db = new Float64Array(m);
  dy.forEach((v, i) => db[i % m] += v);
  return { dx: g.da, dw: g.db, db };
}
