// Shared pieces of the convolution kernels: the shape record, the dispatch grid (everything but the
// batch flattened into x/y, the batch or the reduction chunk in z) and the split reductions used by
// the weight gradients (partial sums over chunks, then a second pass that adds the chunks).

import { acquireBuffer, type Binding, grid1D, linearIndex, releaseBuffer } from "./runtime.ts";
import { sumAxes } from "./reduce.ts";
import { adapterProfile } from "./profile.ts";

export { convOutSize, type ConvShape } from "./shapes.ts";

/** Workgroup size of every convolution kernel (1-D): the profile's convWorkgroup. */
export const wgc = (): number => adapterProfile().convWorkgroup;

/** A 1-D grid of `total` invocations per z-slice and the WGSL expression of the invocation index. */
export function convGrid(total: number, z: number): { groups: [number, number, number]; index: string } {
  const g = grid1D(total, wgc());
  return { groups: [g[0], g[1], z], index: `i32(${linearIndex(g, wgc())})` };
}

/** Largest partial-sum buffer (in floats) a split reduction may allocate. */
const MAX_PARTIAL = 4 * 1024 * 1024;

/**
 * Splits a reduction of `total` steps computing `outputs` values into chunks of at least `minLen`
 * steps, at most 64 chunks and at most MAX_PARTIAL partial values.
 */
export function splitReduction(
  total: number,
  outputs: number,
  minLen: number,
): { chunks: number; len: number } {
  if (total <= 0) return { chunks: 1, len: 1 };
  const maxChunks = Math.max(1, Math.min(64, Math.floor(MAX_PARTIAL / Math.max(1, outputs))));
  let len = Math.max(minLen, Math.ceil(total / maxChunks), 1);
  let chunks = Math.ceil(total / len);
  if (chunks < 1) chunks = 1;
  len = Math.ceil(total / chunks);
  chunks = Math.ceil(total / len);
  return { chunks, len };
}

/**
 * Runs `kernel` writing `chunks` partial results of `outputs` values each, then sums them into `out`;
 * with one chunk the kernel writes `out` directly.
 */
export function withPartials(
  chunks: number,
  outputs: number,
  out: Binding,
  kernel: (dst: Binding) => void,
): void {
  if (chunks <= 1) {
    kernel(out);
    return;
  }
  const buf = acquireBuffer(chunks * outputs * 4);
  kernel({ buffer: buf, offset: 0, size: chunks * outputs * 4 });
  sumAxes({ buffer: buf, offset: 0, size: chunks * outputs * 4 }, [chunks, outputs], [0], out);
  releaseBuffer(buf); // later users of the pooled buffer are recorded after this pass
}

/** WGSL loading `arr[idx]` when `cond` holds, else 0 (the index is clamped to stay in bounds). */
export function guarded(arr: string, idx: string, cond: string): string {
  return `select(0.0, ${arr}[select(0, ${idx}, ${cond})], ${cond})`;
}

export { blockEdge } from "./profile.ts";

export const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/**
 * One spatial axis of a direct or depthwise pass: output position `o` (0 ≤ o < outSub) reads input position
 * o·stride + off + step·u at tap u (0 ≤ u < taps, step ±1; positions outside 0..inSize−1 read 0)
 * and is written at outA + outS·o of an axis of outFull positions.
 */
export interface Axis {
  inSize: number;
  outSub: number;
  stride: number;
  off: number;
  step: number;
  taps: number;
  outFull: number;
  outA: number;
  outS: number;
}

/** The axis of a forward pass: output o reads input o·stride − pad + u. */
export function forwardAxis(inSize: number, out: number, k: number, stride: number, pad: number): Axis {
  return { inSize, outSub: out, stride, off: -pad, step: 1, taps: k, outFull: out, outA: 0, outS: 1 };
}

/**
 * The axis of an input-gradient pass for the input positions a + s·i (s = stride): only the taps
 * t0 + s·u with t0 ≡ a + pad (mod s) reach them, from output position i + (a + pad − t0)/s − u.
 * Returns the axis (over the output-gradient extent `outSize`) and t0.
 */
export function parityAxis(
  inSize: number,
  outSize: number,
  a: number,
  k: number,
  stride: number,
  pad: number,
): { axis: Axis; t0: number } {
  const t0 = (a + pad) % stride;
  return {
    axis: {
      inSize: outSize,
      outSub: Math.ceil((inSize - a) / stride),
      stride: 1,
      off: (a + pad - t0) / stride,
      step: -1,
      taps: t0 < k ? Math.ceil((k - t0) / stride) : 0,
      outFull: inSize,
      outA: a,
      outS: stride,
    },
    t0,
  };
}

/** A pipeline key from the values a kernel's source depends on (objects as JSON). */
export function specKey(...parts: unknown[]): string {
  return parts.map((p) => (typeof p === "object" && p !== null ? JSON.stringify(p) : String(p))).join("|");
}
