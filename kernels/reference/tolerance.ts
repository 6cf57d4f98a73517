// How close an op's f32 GPU result must be to its f64 CPU reference: one table for the tests (the op
// registry, tests/registry.ts) and the bench's validation (bench/kernels.ts). An element passes when
// |actual − expected| <= atol + rtol·|expected|.

export interface Tol {
  rtol?: number;
  atol?: number;
}

/** Forward results of every op, and any check that names no tolerance. */
export const FORWARD_TOL = { rtol: 1e-4, atol: 1e-5 } as const;
/** Gradients, where the op has no entry below. */
export const GRAD_TOL = { rtol: 1e-3, atol: 1e-4 } as const;
/** Gradients of the products (convolutions, GEMMs): one reduction per value, against an exact reference. */
export const PRODUCT_GRAD_TOL = { rtol: 1e-4, atol: 1e-4 } as const;
/** Gradients of the norms: through the statistics, a difference of sums of the size of the group. */
export const NORM_GRAD_TOL = { rtol: 2e-3, atol: 2e-4 } as const;

/** The tolerances of an op (its autograd name, e.g. "groupNorm"): forward and gradients. */
export function opTolerance(op: string): { tol: Tol; gradTol: Tol } {
  const grad = PRODUCT_OPS.has(op) ? PRODUCT_GRAD_TOL : NORM_OPS.has(op) ? NORM_GRAD_TOL : GRAD_TOL;
  return { tol: FORWARD_TOL, gradTol: grad };
}

const PRODUCT_OPS = new Set(["conv2d", "pointwiseMlp", "matmul", "linear", "layerScaleResidual"]);
const NORM_OPS = new Set(["groupNorm", "convGroupNorm", "layerNorm", "batchNorm2d"]);
