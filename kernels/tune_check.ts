// Autotune's reference check: before a candidate may win a shape, it runs once on seeded random inputs
// of the shape's class (a conv on 2 images of the same per-image sizes: one pipeline serves every batch
// size; a matmul on its own dims, its batch cut to 2) and its result is compared with the f64 CPU
// reference (kernels/reference/), to the tolerances of the tests (kernels/reference/tolerance.ts), with
// atol taken relative to the result's RMS where that exceeds 1, as bench/validate.ts does.

import { acquireBuffer, readback, releaseBuffer, upload } from "./runtime.ts";
import { convBackwardInput, convBackwardWeight, convForward } from "./conv.ts";
import { matmul } from "./matmul.ts";
import { conv1x1BackwardInputGeluGrad, conv1x1ForwardGelu } from "./conv1x1.ts";
import { convVariants, matmulVariants, type TuneJob } from "./planner.ts";
import { conv2dBackwardInputRef, conv2dBackwardWeightRef, conv2dRef } from "./reference/conv.ts";
import { matmulOutLength, matmulRef } from "./reference/matmul.ts";
import { geluBackwardRef, geluRef } from "./reference/activation.ts";
import { FORWARD_TOL, PRODUCT_GRAD_TOL, type Tol } from "./reference/tolerance.ts";
import type { ConvShape, MatmulDims } from "./shapes.ts";

/** Images a conv candidate is checked on. */
export const CHECK_IMAGES = 2;

/** Seeded values in [-1, 1), as f32 (so the reference sees what the GPU sees). */
function data(seed: number, n: number): Float64Array {
  const a = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    a[i] = (x >>> 8) / 8388608 - 1;
  }
  return Float64Array.from(a);
}

/**
 * Compares one result with its f64 reference; returns the worst |actual − expected| / (atol + rtol·|expected|)
 * and the first value out of tolerance. atol (which absorbs the rounding left where a sum cancels to near
 * zero) is taken relative to the result's RMS where that exceeds 1: the tests' results are of order 1, real
 * layers' sums up to thousands of terms long (an f32 sum's rounding grows with its terms, not its result).
 */
export function compareResult(actual: Float32Array, expected: Float64Array, tol: Tol, what: string) {
  const { rtol = 0 } = tol;
  if (actual.length !== expected.length) {
    return { worst: Infinity, bad: `${what}: length ${actual.length} != expected ${expected.length}` };
  }
  let sq = 0;
  for (let i = 0; i < expected.length; i++) sq += expected[i] * expected[i];
  const atol = (tol.atol ?? 0) * Math.max(1, Math.sqrt(sq / Math.max(1, expected.length)));
  let worst = 0, bad: string | null = null;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    const r = err / (atol + rtol * Math.abs(expected[i]));
    if (!(r <= 1) && bad === null) {
      bad = `${what}: element ${i} is ${actual[i]}, expected ${expected[i]} (|diff| ${err.toExponential(2)})`;
    }
    if (!(r <= worst)) worst = Number.isNaN(r) ? Infinity : r;
  }
  return { worst, bad };
}

/** What a check compares: named results, their references and tolerances. */
interface Case {
  /** Runs the candidate on the case's inputs (uploaded), writing the outputs. */
  run(variant: string): void;
  outputs: { what: string; buf: GPUBuffer; length: number; expected: () => Float64Array; tol: Tol }[];
  free(): void;
}

/** A buffer holding `values`, or (a count) an output filled with NaN, so that a value left unwritten fails. */
function buffer(values: Float64Array | number): GPUBuffer {
  const n = typeof values === "number" ? values : values.length;
  const b = acquireBuffer(Math.max(1, n) * 4);
  upload(b, typeof values === "number" ? new Float32Array(n).fill(NaN) : Float32Array.from(values));
  return b;
}

/** The conv shape a candidate of `s` is checked on: 2 images, where the candidate applies to them. */
export function checkShape(s: ConvShape, variant: string, pass: TuneJob & { op: "conv" }): ConvShape {
  const small = { ...s, n: Math.min(s.n, CHECK_IMAGES) };
  return convVariants(small, pass.pass).includes(variant) ? small : s;
}

function convCase(job: TuneJob & { op: "conv" }, variant: string): Case {
  const s = checkShape(job.s, variant, job);
  const xN = s.n * s.c * s.h * s.w, wN = s.o * (s.c / s.groups) * s.k * s.k, yN = s.n * s.o * s.oh * s.ow;
  const x = data(1, xN), w = data(2, wN), dy = data(3, yN);
  const ref = memo(() => conv2dRef(x, w, null, s));
  if (job.pass === "forward") {
    const xb = buffer(x), wb = buffer(w), yb = buffer(yN), pre = job.epilogue === "gelu" ? buffer(yN) : null;
    return {
      run: (v) => pre ? conv1x1ForwardGelu(xb, wb, null, pre, yb, s, v) : convForward(xb, wb, null, yb, s, v),
      outputs: [
        { what: "y", buf: yb, length: yN, expected: pre ? () => geluRef(ref()) : ref, tol: FORWARD_TOL },
        ...(pre ? [{ what: "pre", buf: pre, length: yN, expected: ref, tol: FORWARD_TOL }] : []),
      ],
      free: () => [xb, wb, yb, pre].forEach((b) => b && releaseBuffer(b)),
    };
  }
  if (job.pass === "inputGrad") {
    const dyb = buffer(dy), wb = buffer(w), dxb = buffer(xN);
    const gelu = job.epilogue === "dgelu", pre = gelu ? data(4, xN) : null, preb = pre ? buffer(pre) : null;
    const dx = memo(() => conv2dBackwardInputRef(dy, w, s));
    return {
      run: (v) =>
        preb ? conv1x1BackwardInputGeluGrad(dyb, wb, preb, dxb, s, v) : convBackwardInput(dyb, wb, dxb, s, v),
      outputs: [{
        what: "dx",
        buf: dxb,
        length: xN,
        expected: pre ? () => geluBackwardRef(pre, dx()) : dx,
        tol: PRODUCT_GRAD_TOL,
      }],
      free: () => [dyb, wb, dxb, preb].forEach((b) => b && releaseBuffer(b)),
    };
  }
  const dyb = buffer(dy), xb = buffer(x), dwb = buffer(wN);
  return {
    run: (v) => convBackwardWeight(dyb, xb, dwb, s, v),
    outputs: [{
      what: "dw",
      buf: dwb,
      length: wN,
      expected: () => conv2dBackwardWeightRef(dy, x, s),
      tol: PRODUCT_GRAD_TOL,
    }],
    free: () => [dyb, xb, dwb].forEach(releaseBuffer),
  };
}

function matmulCase(job: TuneJob & { op: "matmul" }, variant: string): Case {
  const small = { ...job.d, batch: Math.min(job.d.batch, 2) };
  const d: MatmulDims = matmulVariants(small).includes(variant) ? small : job.d;
  const aN = (d.batchA ? d.batch : 1) * d.m * d.k, bN = (d.batchB ? d.batch : 1) * d.k * d.n;
  const a = data(5, aN), b = data(6, bN), cN = matmulOutLength(d);
  const ab = buffer(a), bb = buffer(b), cb = buffer(cN);
  return {
    run: (v) => matmul(ab, bb, cb, d, { variant: v }),
    outputs: [{ what: "c", buf: cb, length: cN, expected: () => matmulRef(a, b, d), tol: FORWARD_TOL }],
    free: () => [ab, bb, cb].forEach(releaseBuffer),
  };
}

function memo<T>(f: () => T): () => T {
  let v: T | undefined;
  return () => (v ??= f());
}

/** References computed so far, by tune key, output and checked shape (a shape's candidates share them). */
const references = new Map<string, Float64Array>();

/**
 * Runs `variant` once on seeded inputs of `job`'s class and compares its results with the CPU reference.
 * Returns null when they match, else what differs (or the error it threw).
 */
export async function checkCandidate(key: string, job: TuneJob, variant: string): Promise<string | null> {
  let c: Case;
  try {
    c = job.op === "conv" ? convCase(job, variant) : matmulCase(job, variant);
  } catch (e) {
    return `could not set up: ${(e as Error).message}`;
  }
  try {
    c.run(variant);
    for (const o of c.outputs) {
      const got = new Float32Array(await readback(o.buf, 0, o.length * 4));
      const refKey = `${key} ${o.what} ${o.length}`;
      let want = references.get(refKey);
      if (!want) references.set(refKey, want = o.expected());
      const r = compareResult(got, want, o.tol, o.what);
      if (r.bad) return `${r.bad} (worst error ${r.worst.toFixed(1)}× the tolerance)`;
    }
    return null;
  } catch (e) {
    return `failed: ${(e as Error).message}`;
  } finally {
    c.free();
  }
}

/** Forgets the cached references (they are kept for the process: a shape's candidates share them). */
export function clearCheckReferences(): void {
  references.clear();
}
