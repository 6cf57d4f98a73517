// CPU reference of the batched matrix multiply (kernels/matmul.ts, kernels/gemm_tiled.ts) in f64,
// forward and backward, with the MatmulDims semantics: C[b] = op(A[b])·op(B[b]) (+ rowBias on every row),
// op = optional transpose, an operand without a batch dimension shared by every b, and with `sumBatch`
// one C = Σ_b op(A[b])·op(B[b]). Plain functions on Float64Array (no GPU), for tests and checks.

import type { MatmulDims } from "../shapes.ts";

/** Flat index of op(A[z])[i, kk] and op(B[z])[kk, j]. */
function indexers(d: MatmulDims) {
  const { m, n, k } = d;
  const sA = d.batchA ? m * k : 0, sB = d.batchB ? k * n : 0;
  return {
    ai: (z: number, i: number, kk: number) => z * sA + (d.transA ? kk * m + i : i * k + kk),
    bi: (z: number, kk: number, j: number) => z * sB + (d.transB ? j * k + kk : kk * n + j),
  };
}

/** Length of C: one [m, n] matrix with `sumBatch`, else `batch` of them. */
export function matmulOutLength(d: MatmulDims): number {
  return (d.sumBatch ? 1 : d.batch) * d.m * d.n;
}

/** C = op(A)·op(B) (+ rowBias[i] on row i of every result matrix). */
export function matmulRef(
  a: Float64Array,
  b: Float64Array,
  d: MatmulDims,
  rowBias?: Float64Array,
): Float64Array {
  const { batch, m, n, k } = d;
  const { ai, bi } = indexers(d);
  const c = new Float64Array(matmulOutLength(d));
  for (let z = 0; z < batch; z++) {
    const cz = d.sumBatch ? 0 : z;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let kk = 0; kk < k; kk++) s += a[ai(z, i, kk)] * b[bi(z, kk, j)];
        c[(cz * m + i) * n + j] += s;
      }
    }
  }
  if (rowBias) {
    for (let t = 0; t < c.length; t++) c[t] += rowBias[Math.floor(t / n) % m];
  }
  return c;
}

/**
 * Gradients of sum(C · dC) with respect to A, B and the row bias, in their own layouts (an operand
 * shared by the batch gets the sum over the batch).
 */
export function matmulBackwardRef(
  a: Float64Array,
  b: Float64Array,
  dc: Float64Array,
  d: MatmulDims,
): { da: Float64Array; db: Float64Array; dBias: Float64Array } {
  const { batch, m, n, k } = d;
  const { ai, bi } = indexers(d);
  const da = new Float64Array((d.batchA ? batch : 1) * m * k);
  const db = new Float64Array((d.batchB ? batch : 1) * k * n);
  const dBias = new Float64Array(m);
  for (let z = 0; z < batch; z++) {
    const cz = d.sumBatch ? 0 : z;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        const g = dc[(cz * m + i) * n + j];
        for (let kk = 0; kk < k; kk++) {
          da[ai(z, i, kk)] += g * b[bi(z, kk, j)];
          db[bi(z, kk, j)] += g * a[ai(z, i, kk)];
        }
      }
    }
  }
  for (let t = 0; t < dc.length; t++) dBias[Math.floor(t / n) % m] += dc[t];
  return { da, db, dBias };
}
