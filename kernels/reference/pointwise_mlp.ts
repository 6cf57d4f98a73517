// CPU reference of the fused pointwise MLP (autograd/ops/pointwise_mlp.ts; the GEMM epilogues of
// kernels/epilogue.ts) in f64: y = w2·gelu(w1·x + b1) + b2 per pixel, NCHW, 1×1 weights, exact (erf)
// GELU; and its backward from an upstream gradient dy. Plain functions on Float64Array, for tests.

import { gelu64, geluGrad64 } from "./activation.ts";

/** Sizes: n images of c channels and p pixels, e expanded channels, o output channels. */
export interface MlpDims {
  n: number;
  c: number;
  p: number;
  e: number;
  o: number;
}

/** out[b, i, q] = Σ_k w[i, k]·x[b, k, q] (+ bias[i]) for x [n, k, p], w [m, k]. */
function pointwise(
  x: Float64Array,
  w: Float64Array,
  bias: Float64Array | null,
  n: number,
  k: number,
  m: number,
  p: number,
) {
  const out = new Float64Array(n * m * p);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < m; i++) {
      for (let q = 0; q < p; q++) {
        let s = bias ? bias[i] : 0;
        for (let kk = 0; kk < k; kk++) s += w[i * k + kk] * x[(b * k + kk) * p + q];
        out[(b * m + i) * p + q] = s;
      }
    }
  }
  return out;
}

/** Forward: pre = w1·x + b1, h = gelu(pre), y = w2·h + b2. */
export function pointwiseMlpRef(
  x: Float64Array,
  w1: Float64Array,
  b1: Float64Array | null,
  w2: Float64Array,
  b2: Float64Array | null,
  d: MlpDims,
): { pre: Float64Array; h: Float64Array; y: Float64Array } {
  const pre = pointwise(x, w1, b1, d.n, d.c, d.e, d.p);
  const h = pre.map(gelu64);
  return { pre, h, y: pointwise(h, w2, b2, d.n, d.e, d.o, d.p) };
}

/** Gradients of Σ y·dy with respect to x, w1, b1, w2, b2. */
export function pointwiseMlpBackwardRef(
  x: Float64Array,
  w1: Float64Array,
  b1: Float64Array | null,
  w2: Float64Array,
  b2: Float64Array | null,
  dy: Float64Array,
  d: MlpDims,
): { dx: Float64Array; dw1: Float64Array; db1: Float64Array; dw2: Float64Array; db2: Float64Array } {
  const { n, c, p, e, o } = d;
  const { pre, h } = pointwiseMlpRef(x, w1, b1, w2, b2, d);
  // dpre = (w2ᵀ·dy) · gelu'(pre): w2ᵀ is [e, o]
  const w2t = new Float64Array(e * o);
  for (let i = 0; i < o; i++) for (let j = 0; j < e; j++) w2t[j * o + i] = w2[i * e + j];
  const dpre = pointwise(dy, w2t, null, n, o, e, p).map((g, t) => g * geluGrad64(pre[t]));
  const w1t = new Float64Array(c * e);
  for (let i = 0; i < e; i++) for (let j = 0; j < c; j++) w1t[j * e + i] = w1[i * c + j];
  const dx = pointwise(dpre, w1t, null, n, e, c, p);
  // dw[i, k] = Σ_{b,q} g[b, i, q]·in[b, k, q]; db[i] = Σ_{b,q} g[b, i, q]
  const weightGrad = (g: Float64Array, inp: Float64Array, m: number, k: number) => {
    const dw = new Float64Array(m * k), db = new Float64Array(m);
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < m; i++) {
        for (let q = 0; q < p; q++) {
          const gv = g[(b * m + i) * p + q];
          db[i] += gv;
          for (let kk = 0; kk < k; kk++) dw[i * k + kk] += gv * inp[(b * k + kk) * p + q];
        }
      }
    }
    return { dw, db };
  };
  const g2 = weightGrad(dy, h, o, e), g1 = weightGrad(dpre, x, e, c);
  return { dx, dw1: g1.dw, db1: g1.db, dw2: g2.dw, db2: g2.db };
}
