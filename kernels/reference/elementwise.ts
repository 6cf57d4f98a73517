// CPU references of the elementwise ops (kernels/elementwise.ts; autograd/ops/elementwise.ts add, sub,
// mul, scale; relu is in activation.ts) in f64, with numpy's broadcasting.

/** Broadcast `a` of shape `from` to shape `to` (numpy rules). */
export function broadcastTo(a: Float64Array, from: number[], to: number[]): Float64Array {
  const n = to.reduce((x, y) => x * y, 1);
  const pad = [...new Array(to.length - from.length).fill(1), ...from];
  const out = new Float64Array(n);
  const inStr = pad.map((_, k) => pad.slice(k + 1).reduce((x, y) => x * y, 1));
  const outStr = to.map((_, k) => to.slice(k + 1).reduce((x, y) => x * y, 1));
  for (let i = 0; i < n; i++) {
    let j = 0;
    for (let k = 0; k < to.length; k++) {
      const c = Math.floor(i / outStr[k]) % to[k];
      if (pad[k] !== 1) j += c * inStr[k];
    }
    out[i] = a[j];
  }
  return out;
}

/** f(a, b) elementwise, a of shape `sa` and b of shape `sb` broadcast to `so`. */
function binary(
  f: (x: number, y: number) => number,
  a: Float64Array,
  sa: number[],
  b: Float64Array,
  sb: number[],
  so: number[],
): Float64Array {
  const x = broadcastTo(a, sa, so), y = broadcastTo(b, sb, so);
  return x.map((v, i) => f(v, y[i]));
}

/** a + b (broadcast to `so`). */
export const addRef = (a: Float64Array, sa: number[], b: Float64Array, sb: number[], so: number[]) =>
  binary((x, y) => x + y, a, sa, b, sb, so);
/** a − b (broadcast to `so`). */
export const subRef = (a: Float64Array, sa: number[], b: Float64Array, sb: number[], so: number[]) =>
  binary((x, y) => x - y, a, sa, b, sb, so);
/** a · b (broadcast to `so`). */
export const mulRef = (a: Float64Array, sa: number[], b: Float64Array, sb: number[], so: number[]) =>
  binary((x, y) => x * y, a, sa, b, sb, so);
/** s · a. */
export const scaleRef = (a: Float64Array, s: number) => a.map((v) => s * v);
