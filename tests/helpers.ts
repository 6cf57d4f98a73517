// Shared test helpers: GPU set-up, closeness checks, and the op checker that compares an op's GPU
// forward with a CPU reference and its GPU backward with central finite differences of that
// reference in f64. The references live in kernels/reference/, their tolerances in
// kernels/reference/tolerance.ts.

import { initGPU, poolStats, Rng, scope, type Tensor, tensor } from "../mod.ts";
import { setKeyCheck } from "../kernels/runtime.ts";
import { FORWARD_TOL, GRAD_TOL, type Tol } from "../kernels/reference/tolerance.ts";

export type { Tol };

/** Initialises WebGPU once (every test file calls this first). */
export async function setup(): Promise<void> {
  await initGPU();
  setKeyCheck(true); // a pipeline key that misses a parameter fails the test that meets it
}

/**
 * Asserts |a - e| <= atol + rtol·|e| elementwise (naming the first element that fails) and returns the
 * worst |a - e| / (|e| + atol).
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: Tol = {},
  what = "values",
): number {
  const { rtol = FORWARD_TOL.rtol, atol = FORWARD_TOL.atol } = tol;
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length} != expected ${expected.length}`);
  }
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    const err = Math.abs(a - e);
    if (!(err <= atol + rtol * Math.abs(e))) {
      throw new Error(`${what}: element ${i} is ${a}, expected ${e} (|diff| ${err.toExponential(2)})`);
    }
    const rel = err / (Math.abs(e) + atol);
    if (rel > worst) worst = rel;
  }
  return worst;
}

export function randomArray(rng: Rng, n: number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = scale * (2 * rng.uniform() - 1);
  return a;
}

/** A CPU reference: f64 inputs to f64 output (row-major, same layout as the GPU op). */
export type CpuFn = (inputs: Float64Array[]) => Float64Array;

/** Gradient of sum(f(x) * upstream) wrt every input by central differences. */
export function finiteDiff(
  f: CpuFn,
  inputs: Float64Array[],
  upstream: Float64Array,
  h = 1e-6,
): Float64Array[] {
  const loss = (xs: Float64Array[]) => {
    const y = f(xs);
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i] * upstream[i];
    return s;
  };
  return inputs.map((x, k) => {
    const g = new Float64Array(x.length);
    for (let j = 0; j < x.length; j++) {
      const xs = inputs.map((a, i) => (i === k ? Float64Array.from(a) : a));
      const orig = x[j];
      xs[k][j] = orig + h;
      const lp = loss(xs);
      xs[k][j] = orig - h;
      const lm = loss(xs);
      g[j] = (lp - lm) / (2 * h);
    }
    return g;
  });
}

export interface OpCase {
  name: string;
  /** Input shapes. */
  shapes: number[][];
  /** The op on GPU tensors. */
  gpu: (xs: Tensor[]) => Tensor;
  /** The CPU reference. */
  cpu: CpuFn;
  /** Inputs that take no gradient (e.g. constants). */
  noGrad?: number[];
  /** Input generator (default uniform in [-1, 1]). */
  init?: (rng: Rng, shape: number[], index: number) => Float64Array;
  tol?: Tol;
  gradTol?: Tol;
  seed?: number;
}

/**
 * Checks forward against the CPU reference and every input gradient against finite differences,
 * and that every buffer the op used went back to the pool. Returns the worst relative errors.
 */
export async function checkOp(c: OpCase): Promise<{ forward: number; backward: number }> {
  const rng = new Rng(c.seed ?? 1234);
  const init = c.init ?? ((r: Rng, shape: number[]) => randomArray(r, shape.reduce((a, b) => a * b, 1)));
  const xs64 = c.shapes.map((s, i) => init(rng, s, i));
  const expected = c.cpu(xs64);
  const upstream = randomArray(rng, expected.length);
  const fd = finiteDiff(c.cpu, xs64, upstream);
  const before = poolStats().bytesInUse;
  const leaves = c.shapes.map((s, i) =>
    tensor(Float32Array.from(xs64[i]), s, { requiresGrad: !(c.noGrad ?? []).includes(i) })
  );
  const y = scope(() => {
    const out = c.gpu(leaves);
    const up = tensor(Float32Array.from(upstream), out.shape);
    out.backward(up);
    up.dispose();
    return out;
  });
  const worstF = assertClose(await y.toArray(), expected, c.tol, `${c.name} forward`);
  let worstB = 0;
  for (let i = 0; i < leaves.length; i++) {
    if ((c.noGrad ?? []).includes(i)) continue;
    const g = leaves[i].grad;
    if (!g) throw new Error(`${c.name}: input ${i} got no gradient`);
    const w = assertClose(
      await g.toArray(),
      fd[i],
      c.gradTol ?? GRAD_TOL,
      `${c.name} grad ${i}`,
    );
    worstB = Math.max(worstB, w);
  }
  y.dispose();
  leaves.forEach((t) => t.dispose());
  const after = poolStats().bytesInUse;
  if (after !== before) throw new Error(`${c.name}: ${after - before} bytes still in use after the op`);
  return { forward: worstF, backward: worstB };
}
