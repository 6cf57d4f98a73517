// CPU references of the activations (kernels/activation.ts; autograd/ops/activation.ts gelu, softmax;
// autograd/ops/elementwise.ts relu) in f64, forward and backward, and the scalar exact (erf) GELU and
// its derivative that the GEMM epilogues' references use too.

const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** erfc in f64 to ~1e-15 relative: a series for |x| < 3, a continued fraction beyond. */
export function erfc64(x: number): number {
  if (x < -3) return 2 - erfc64(-x);
  if (x < 3) {
    let term = x, sum = x;
    for (let n = 1; n < 200 && Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
      term *= (2 * x * x) / (2 * n + 1);
      sum += term;
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
  }
  let f = x;
  for (let k = 80; k >= 1; k--) f = x + k / 2 / f;
  return Math.exp(-x * x) / (Math.sqrt(Math.PI) * f);
}

/** The exact GELU of one value. */
export const gelu64 = (x: number): number => 0.5 * x * erfc64(-x / Math.SQRT2);
/** GELU'(x). */
export const geluGrad64 = (x: number): number =>
  0.5 * erfc64(-x / Math.SQRT2) + x * Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);

/** gelu(x) elementwise. */
export function geluRef(x: Float64Array): Float64Array {
  return x.map(gelu64);
}

/** dx = dy · gelu'(x). */
export function geluBackwardRef(x: Float64Array, dy: Float64Array): Float64Array {
  return x.map((v, i) => dy[i] * geluGrad64(v));
}

/** max(x, 0) elementwise. */
export function reluRef(x: Float64Array): Float64Array {
  return x.map((v) => Math.max(v, 0));
}

/** dx = dy where x > 0, else 0. */
export function reluBackwardRef(x: Float64Array, dy: Float64Array): Float64Array {
  return x.map((v, i) => v > 0 ? dy[i] : 0);
}

/** Calls f(at) for every line along axis `dim` of `shape`, `at(k)` the flat index of its k-th value. */
function lines(shape: number[], dim: number, f: (at: (k: number) => number, d: number) => void): void {
  const outer = prod(shape.slice(0, dim)), d = shape[dim], inner = prod(shape.slice(dim + 1));
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) f((k) => o * d * inner + k * inner + i, d);
  }
}

/** Softmax along axis `dim` of `shape`. */
export function softmaxRef(x: Float64Array, shape: number[], dim: number): Float64Array {
  const y = new Float64Array(x.length);
  lines(shape, dim, (at, d) => {
    let m = -Infinity;
    for (let k = 0; k < d; k++) m = Math.max(m, x[at(k)]);
    let s = 0;
    for (let k = 0; k < d; k++) s += Math.exp(x[at(k)] - m);
    for (let k = 0; k < d; k++) y[at(k)] = Math.exp(x[at(k)] - m) / s;
  });
  return y;
}

/** dx = y · (dy − Σ_k y·dy) along `dim`, from the softmax's output y. */
export function softmaxBackwardRef(
  y: Float64Array,
  dy: Float64Array,
  shape: number[],
  dim: number,
): Float64Array {
  const dx = new Float64Array(y.length);
  lines(shape, dim, (at, d) => {
    let s = 0;
    for (let k = 0; k < d; k++) s += y[at(k)] * dy[at(k)];
    for (let k = 0; k < d; k++) dx[at(k)] = y[at(k)] * (dy[at(k)] - s);
  });
  return dx;
}
