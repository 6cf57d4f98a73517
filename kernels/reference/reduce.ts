// CPU reference of the sums (kernels/reduce.ts; autograd/ops/reduce.ts sum, mean) in f64.

/** Sum over `axes` of an array of `shape` (the summed axes kept with size 1), times `scale` (mean: 1/count). */
export function sumRef(x: Float64Array, shape: number[], axes: number[], scale = 1): Float64Array {
  const kept = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const out = new Float64Array(kept.reduce((a, b) => a * b, 1));
  const str = shape.map((_, k) => shape.slice(k + 1).reduce((a, b) => a * b, 1));
  const kStr = kept.map((_, k) => kept.slice(k + 1).reduce((a, b) => a * b, 1));
  for (let i = 0; i < x.length; i++) {
    let o = 0;
    for (let k = 0; k < shape.length; k++) {
      o += (axes.includes(k) ? 0 : Math.floor(i / str[k]) % shape[k]) * kStr[k];
    }
    out[o] += x[i] * scale;
  }
  return out;
}
