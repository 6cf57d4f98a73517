// f64 CPU references of the ops that have no reference in kernels/reference/ (activations, losses,
// norms, pooling, linear): plain functions on Float64Array, the same row-major layouts as the GPU ops.
// The registry (tests/registry.ts) checks the GPU ops against them.

const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);

// erfc, GELU and GELU' in f64 live beside the fused pointwise MLP's reference
export { erfc64, gelu64, geluGrad64 } from "../kernels/reference/pointwise_mlp.ts";

/** Softmax along axis `dim` of `shape`. */
export function softmax64(x: Float64Array, shape: number[], dim: number): Float64Array {
  const outer = prod(shape.slice(0, dim)), d = shape[dim], inner = prod(shape.slice(dim + 1));
  const y = new Float64Array(x.length);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (k: number) => o * d * inner + k * inner + i;
      let m = -Infinity;
      for (let k = 0; k < d; k++) m = Math.max(m, x[at(k)]);
      let s = 0;
      for (let k = 0; k < d; k++) s += Math.exp(x[at(k)] - m);
      for (let k = 0; k < d; k++) y[at(k)] = Math.exp(x[at(k)] - m) / s;
    }
  }
  return y;
}

/** Mean cross-entropy of logits [n, c] against class indices (log-sum-exp with the max subtracted). */
export function crossEntropy64(x: Float64Array, n: number, c: number, t: ArrayLike<number>): number {
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

/** GroupNorm on x [N, C, *]; LayerNorm over the last L values is GroupNorm(1) on [rows, L]. */
export function groupNorm64(
  x: Float64Array,
  shape: number[],
  groups: number,
  w: Float64Array | null,
  b: Float64Array | null,
  eps = 1e-5,
): Float64Array {
  const [n, c] = shape, m = prod(shape.slice(2)), cg = c / groups, len = cg * m;
  const y = new Float64Array(x.length);
  for (let i = 0; i < n * groups; i++) {
    const off = i * len;
    let mu = 0;
    for (let r = 0; r < len; r++) mu += x[off + r];
    mu /= len;
    let v = 0;
    for (let r = 0; r < len; r++) v += (x[off + r] - mu) ** 2;
    v /= len;
    const rs = 1 / Math.sqrt(v + eps);
    for (let r = 0; r < len; r++) {
      const ch = (i % groups) * cg + Math.floor(r / m);
      y[off + r] = (x[off + r] - mu) * rs * (w ? w[ch] : 1) + (b ? b[ch] : 0);
    }
  }
  return y;
}

/** BatchNorm with batch statistics; also returns the statistics (biased variance). */
export function batchNorm64(
  x: Float64Array,
  shape: number[],
  w: Float64Array | null,
  b: Float64Array | null,
  eps = 1e-5,
): { y: Float64Array; mean: Float64Array; variance: Float64Array } {
  const [n, c] = shape, m = prod(shape.slice(2));
  const y = new Float64Array(x.length), mean = new Float64Array(c), variance = new Float64Array(c);
  for (let ch = 0; ch < c; ch++) {
    let mu = 0;
    for (let i = 0; i < n; i++) for (let r = 0; r < m; r++) mu += x[(i * c + ch) * m + r];
    mu /= n * m;
    let v = 0;
    for (let i = 0; i < n; i++) for (let r = 0; r < m; r++) v += (x[(i * c + ch) * m + r] - mu) ** 2;
    v /= n * m;
    mean[ch] = mu;
    variance[ch] = v;
    const rs = 1 / Math.sqrt(v + eps);
    for (let i = 0; i < n; i++) {
      for (let r = 0; r < m; r++) {
        const k = (i * c + ch) * m + r;
        y[k] = (x[k] - mu) * rs * (w ? w[ch] : 1) + (b ? b[ch] : 0);
      }
    }
  }
  return { y, mean, variance };
}

/** BatchNorm in eval mode: the running statistics `rm`, `rv` per channel. */
export function batchNormEval64(
  x: Float64Array,
  shape: number[],
  w: Float64Array | null,
  b: Float64Array | null,
  rm: Float64Array,
  rv: Float64Array,
  eps = 1e-5,
): Float64Array {
  const c = shape[1], m = prod(shape.slice(2));
  return x.map((v, k) => {
    const ch = Math.floor(k / m) % c;
    return (v - rm[ch]) / Math.sqrt(rv[ch] + eps) * (w ? w[ch] : 1) + (b ? b[ch] : 0);
  });
}

/** Adaptive average pooling of [N, C, H, W] to [oh, ow] with PyTorch's windows. */
export function adaptiveAvgPool64(x: Float64Array, shape: number[], oh: number, ow: number): Float64Array {
  const [n, c, h, w] = shape;
  const out = new Float64Array(n * c * oh * ow);
  for (let p = 0; p < n * c; p++) {
    for (let i = 0; i < oh; i++) {
      const y0 = Math.floor((i * h) / oh), y1 = Math.ceil(((i + 1) * h) / oh);
      for (let j = 0; j < ow; j++) {
        const x0 = Math.floor((j * w) / ow), x1 = Math.ceil(((j + 1) * w) / ow);
        let s = 0;
        for (let y = y0; y < y1; y++) for (let xx = x0; xx < x1; xx++) s += x[p * h * w + y * w + xx];
        out[(p * oh + i) * ow + j] = s / ((y1 - y0) * (x1 - x0));
      }
    }
  }
  return out;
}

/** x·wᵀ + b for x [rows, k], w [m, k]. */
export function linear64(x: Float64Array, w: Float64Array, b: Float64Array | null, k: number): Float64Array {
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
