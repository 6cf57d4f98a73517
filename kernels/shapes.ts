// The shape records of the convolution and matrix-multiply kernels (a leaf module: the planner, the
// kernels and their CPU references all describe work with these).

/** Sizes of one convolution, NCHW input and OIHW weight with a square k×k kernel. */
export interface ConvShape {
  n: number;
  c: number;
  h: number;
  w: number;
  o: number;
  k: number;
  stride: number;
  pad: number;
  groups: number;
  oh: number;
  ow: number;
}

/** Output size of one spatial dimension. */
export function convOutSize(size: number, k: number, stride: number, pad: number): number {
  return Math.floor((size + 2 * pad - k) / stride) + 1;
}

/** Batched C[b] = op(A[b]) · op(B[b]), op = optional transpose. */
export interface MatmulDims {
  batch: number;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  /** Whether A / B have a batch dimension of `batch` (false: one matrix shared by all). */
  batchA: boolean;
  batchB: boolean;
  /** C = Σ_b op(A[b])·op(B[b]), one [m, n] result (e.g. a weight gradient summed over images). */
  sumBatch?: boolean;
}

/** A short key of a convolution's sizes. */
export function convKey(s: ConvShape): string {
  return `${s.n},${s.c},${s.h},${s.w},${s.o},${s.k},${s.stride},${s.pad},${s.groups}`;
}

/** A short key of a matmul's sizes and layout. */
export function matmulKey(d: MatmulDims): string {
  const f = (b: boolean | undefined) => (b ? 1 : 0);
  return `${d.batch},${d.m},${d.n},${d.k},${f(d.transA)}${f(d.transB)}${f(d.batchA)}${f(d.batchB)}${
    f(d.sumBatch)
  }`;
}
