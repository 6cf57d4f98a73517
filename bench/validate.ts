// Validate, then benchmark (llm.c's order): before a kernel row of bench/kernels.ts is timed, its kernel
// runs once on seeded random data and its result is compared with the f64 CPU reference of its op
// (kernels/reference/), to the tolerances the tests use (kernels/reference/tolerance.ts). A row that does
// not match is reported as failed and not timed.
//
// Cost: a reference runs on the row's real shape where it needs at most REFERENCE_BUDGET multiply-adds
// (about a second of f64 JavaScript); a bigger convolution or GEMM is validated with fewer images, the
// largest count within the budget for which the planner picks the same kernel variant as for the row
// (one image at least: the models' biggest layer, a 1×1 conv of 16.8 M multiply-adds per image, takes
// ~1 s). Tolerances: compareResult() in kernels/tune_check.ts.

import { noGrad, numel, scope, type Tensor, tensor } from "../autograd/tensor.ts";
import { Rng } from "../autograd/random.ts";
import { matmul, type MatmulDims } from "../kernels/matmul.ts";
import { type ConvPass, planConv, planMatmul } from "../kernels/planner.ts";
import { acquireBuffer, readback, releaseBuffer, upload } from "../kernels/runtime.ts";
import type { ConvShape } from "../kernels/shapes.ts";
import { compareResult } from "../kernels/tune_check.ts";
import {
  conv2dBackwardBiasRef,
  conv2dBackwardInputRef,
  conv2dBackwardWeightRef,
  conv2dRef,
} from "../kernels/reference/conv.ts";
import { matmulOutLength, matmulRef } from "../kernels/reference/matmul.ts";
import { geluBackwardRef, geluRef, reluBackwardRef, reluRef } from "../kernels/reference/activation.ts";
import { layerScaleBackwardRef, layerScaleRef } from "../kernels/reference/layerscale.ts";
import { linearBackwardRef, linearRef } from "../kernels/reference/linear.ts";
import * as normRef from "../kernels/reference/norm.ts";
import { adaptiveAvgPool2dBackwardRef, adaptiveAvgPool2dRef } from "../kernels/reference/pool.ts";
import { adamWRef } from "../kernels/reference/optim.ts";
import { opTolerance, type Tol } from "../kernels/reference/tolerance.ts";
import type { AdamW } from "../nn/optim.ts";
import { type BatchNorm2d, Conv2d, type GroupNorm, type LayerNorm } from "../nn/layers.ts";
import type { Module } from "../nn/module.ts";
import { convShapeOf, type LayerCase, opOfLayer } from "./shapes.ts";

/** Multiply-adds a reference may take on the row's own shape (~1 s of f64 JavaScript). */
export const REFERENCE_BUDGET = 2e7;
/** The same for a GEMM (kernels/reference/matmul.ts runs about five times faster per multiply-add). */
export const GEMM_REFERENCE_BUDGET = 1e8;

/** The outcome of a row's validation (in the table and the --json report). */
export interface Validation {
  /** "passed": within tolerance; "failed": not (the row is not timed). */
  status: "passed" | "failed";
  /** The op whose reference was compared (the autograd op's name: conv2d, groupNorm, matmul, adamW, …). */
  op: string;
  /** Images the kernel ran on: the row's batch, or fewer where the reference would be slow. */
  batch: number;
  /** Whether `batch` is below the row's (the same kernel variant on fewer images). */
  reduced: boolean;
  /** Worst |actual − expected| / (atol + rtol·|expected|) over the values compared (≤ 1 passes). */
  worst: number;
  /** The first value out of tolerance, or what was compared. */
  detail: string;
  /** Wall time of the validation (the kernel's first run, pipeline compilation included; readback; reference), ms. */
  ms: number;
  /** The part of `ms` the CPU reference took. */
  referenceMs: number;
}

/**
 * A hook on the kernel's results before they are compared (the tests inject a wrong value through it
 * to see the validation catch it): `row` is "name pass", `values` the results in comparison order.
 */
export type ResultHook = (row: string, values: Float32Array[]) => void;

/** Seeded values in [-1, 1), rounded to f32 (so the reference sees what the GPU sees). */
function data(rng: Rng, n: number): Float64Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = 2 * rng.uniform() - 1;
  return Float64Array.from(a);
}

/** Compares the results with the references; the hook sees the results first. */
function verdict(
  base: Pick<Validation, "op" | "batch" | "reduced">,
  row: string,
  results: [string, Float32Array, Float64Array, Tol][],
  hook: ResultHook | undefined,
  t0: number,
  referenceMs: number,
  note = "",
): Validation {
  hook?.(row, results.map((r) => r[1]));
  let worst = 0, bad: string | null = null;
  for (const [what, a, e, tol] of results) {
    const c = compareResult(a, e, tol, what);
    worst = Math.max(worst, c.worst);
    bad ??= c.bad;
  }
  const what = results.map((r) => r[0]).join(", ");
  return {
    ...base,
    status: bad === null ? "passed" : "failed",
    worst,
    detail: (bad ?? `${what} within tolerance`) + note,
    ms: performance.now() - t0,
    referenceMs,
  };
}

const convPass = (pass: string): ConvPass =>
  pass === "forward" ? "forward" : pass === "backward (input)" ? "inputGrad" : "weightGrad";

/**
 * The images to validate a layer row on: the row's batch where its reference fits the budget, else the
 * most that fit for which the planner picks the row's variant (else the most that fit, noted).
 */
function layerBatch(m: Module, c: LayerCase, pass: string): { batch: number; note: string } {
  const n = c.inShape[0];
  if (!(m instanceof Conv2d)) return { batch: n, note: "" };
  const s1 = convShapeOf(m, [1, ...c.inShape.slice(1)]);
  const perImage = s1.o * s1.oh * s1.ow * (s1.c / s1.groups) * s1.k * s1.k;
  const fit = Math.max(1, Math.min(n, Math.floor(REFERENCE_BUDGET / perImage)));
  if (fit === n) return { batch: n, note: "" };
  const p = convPass(pass);
  const variant = (b: number) => planConv(convShapeOf(m, [b, ...c.inShape.slice(1)]), p).variant;
  const want = variant(n);
  for (let b = fit; b >= 1; b--) if (variant(b) === want) return { batch: b, note: "" };
  return { batch: fit, note: ` (at batch ${fit} the planner picks ${variant(fit)}, the row ${want})` };
}

/** Validates one pass of a layer row (bench/kernels.ts benchLayer) on seeded data. */
export async function validateLayer(
  m: Module,
  c: LayerCase,
  pass: { pass: string; x: boolean; params: boolean },
  hook?: ResultHook,
): Promise<Validation> {
  const t0 = performance.now();
  const op = opOfLayer(c.type), tol = opTolerance(op);
  const { batch, note } = layerBatch(m, c, pass.pass);
  const inShape = [batch, ...c.inShape.slice(1)];
  const outShape = [batch, ...c.outShape.slice(1)];
  const rng = new Rng(20261208);
  const x64 = data(rng, numel(inShape));
  const named = m.namedParameters();
  const p64 = new Map<string, Float64Array>();
  for (const [name, t] of named) p64.set(name, Float64Array.from(await t.toArray()));
  const backward = pass.pass !== "forward";
  const up64 = backward ? data(rng, numel(outShape)) : null;

  // the kernel, once
  const saved = named.map(([, t]) => ({ t, requiresGrad: t.requiresGrad, grad: t.grad }));
  const x = tensor(Float32Array.from(x64), inShape, { requiresGrad: backward && pass.x });
  const got: Float32Array[] = [];
  try {
    for (const s of saved) {
      s.t.requiresGrad = backward && pass.params;
      s.t.grad = null;
    }
    const y: Tensor = scope(() => {
      if (!backward) return noGrad(() => m.forward(x));
      const out = m.forward(x);
      const up = tensor(Float32Array.from(up64!), out.shape);
      out.backward(up);
      up.dispose();
      return out;
    });
    if (!backward) got.push(await y.toArray());
    y.dispose();
    if (backward && pass.x) got.push(await x.grad!.toArray());
    if (backward && pass.params) { for (const s of saved) got.push(await s.t.grad!.toArray()); }
  } finally {
    x.dispose();
    for (const s of saved) {
      if (s.t.grad !== s.grad) s.t.grad?.dispose();
      s.t.grad = s.grad;
      s.t.requiresGrad = s.requiresGrad;
    }
  }

  // the reference, in the same order
  const r0 = performance.now();
  const want = layerReference(m, c, op, inShape, x64, p64, up64, pass);
  const referenceMs = performance.now() - r0;
  const results = want.map(([what, e], i): [string, Float32Array, Float64Array, Tol] => [
    what,
    got[i] ?? new Float32Array(0),
    e,
    what === "y" ? tol.tol : tol.gradTol,
  ]);
  return verdict(
    { op, batch, reduced: batch < c.inShape[0] },
    `${c.label} ${pass.pass}`,
    results,
    hook,
    t0,
    referenceMs,
    note,
  );
}

/** The reference results of one pass of a layer: y, or dx and the parameters' gradients (in their order). */
function layerReference(
  m: Module,
  c: LayerCase,
  op: string,
  shape: number[],
  x: Float64Array,
  p: Map<string, Float64Array>,
  dy: Float64Array | null,
  pass: { pass: string; x: boolean; params: boolean },
): [string, Float64Array][] {
  const w = p.get("weight") ?? null, b = p.get("bias") ?? null;
  const names = [...p.keys()];
  /** Gradients of the pass: dx where the input takes one, then the parameters'. */
  const grads = (dx: Float64Array, dp: Record<string, Float64Array>): [string, Float64Array][] => [
    ...(pass.x ? [["dx", dx] as [string, Float64Array]] : []),
    ...(pass.params ? names.map((n): [string, Float64Array] => [`d${n}`, dp[n]]) : []),
  ];
  const [n, ch] = shape, pixels = numel(shape.slice(2));
  switch (op) {
    case "conv2d": {
      const s: ConvShape = convShapeOf(m as Conv2d, shape);
      if (!dy) return [["y", conv2dRef(x, w!, b, s)]];
      const out: [string, Float64Array][] = [];
      if (pass.x) out.push(["dx", conv2dBackwardInputRef(dy, w!, s)]);
      if (pass.params) {
        const dp: Record<string, Float64Array> = { weight: conv2dBackwardWeightRef(dy, x, s) };
        if (b) dp.bias = conv2dBackwardBiasRef(dy, s);
        out.push(...names.map((k): [string, Float64Array] => [`d${k}`, dp[k]]));
      }
      return out;
    }
    case "groupNorm": {
      const { numGroups: g, eps } = m as GroupNorm;
      if (!dy) return [["y", normRef.groupNormRef(x, shape, g, w, b, eps)]];
      const r = normRef.groupNormBackwardRef(x, shape, g, w, dy, eps);
      return grads(r.dx, { weight: r.dw, bias: r.db });
    }
    case "layerNorm": {
      const { normalizedShape: l, eps } = m as LayerNorm;
      if (!dy) return [["y", normRef.layerNormRef(x, l, w, b, eps)]];
      const r = normRef.layerNormBackwardRef(x, l, w, dy, eps);
      return grads(r.dx, { weight: r.dw, bias: r.db });
    }
    case "batchNorm2d": {
      const { eps } = m as BatchNorm2d;
      if (!dy) return [["y", normRef.batchNorm2dRef(x, shape, w, b, eps).y]];
      const r = normRef.batchNorm2dBackwardRef(x, shape, w, dy, eps);
      return grads(r.dx, { weight: r.dw, bias: r.db });
    }
    case "relu":
      return dy ? grads(reluBackwardRef(x, dy), {}) : [["y", reluRef(x)]];
    case "gelu":
      return dy ? grads(geluBackwardRef(x, dy), {}) : [["y", geluRef(x)]];
    case "adaptiveAvgPool2d": {
      const [oh, ow] = c.outShape.slice(2);
      if (!dy) return [["y", adaptiveAvgPool2dRef(x, shape, oh, ow)]];
      return grads(adaptiveAvgPool2dBackwardRef(dy, shape, oh, ow), {});
    }
    case "linear": {
      const k = shape[shape.length - 1];
      if (!dy) return [["y", linearRef(x, w!, b, k)]];
      const r = linearBackwardRef(x, w!, dy, k);
      return grads(r.dx, { weight: r.dw, bias: r.db });
    }
    case "layerScale": {
      const s = { n, c: ch, p: pixels }, gamma = p.get("gamma")!;
      if (!dy) return [["y", layerScaleRef(x, gamma, s)]];
      const r = layerScaleBackwardRef(dy, x, gamma, s);
      return grads(r.dx, { gamma: r.dgamma });
    }
  }
  throw new Error(`no CPU reference for ${c.type} (op ${op})`);
}

/**
 * Validates a GEMM row (bench/kernels.ts benchGemms): `dims(images)` gives the row's GEMM for a number of
 * images (`images` the row's own).
 */
export async function validateGemm(
  row: string,
  images: number,
  dims: (images: number) => MatmulDims,
  hook?: ResultHook,
): Promise<Validation> {
  const t0 = performance.now();
  const cost = (d: MatmulDims) => d.batch * d.m * d.n * d.k;
  const want = planMatmul(dims(images)).variant;
  const perImage = cost(dims(1));
  const fit = Math.max(1, Math.min(images, Math.floor(GEMM_REFERENCE_BUDGET / perImage)));
  let batch = fit, note = "";
  if (fit < images) {
    while (batch > 1 && planMatmul(dims(batch)).variant !== want) batch--;
    if (planMatmul(dims(batch)).variant !== want) {
      batch = fit;
      note = ` (at ${fit} images the planner picks ${planMatmul(dims(fit)).variant}, the row ${want})`;
    }
  }
  const d = dims(batch);
  const aN = (d.batchA ? d.batch : 1) * d.m * d.k, bN = (d.batchB ? d.batch : 1) * d.k * d.n;
  const cN = matmulOutLength(d);
  const rng = new Rng(20261208);
  const a64 = data(rng, aN), b64 = data(rng, bN);
  const a = acquireBuffer(aN * 4), b = acquireBuffer(bN * 4), c = acquireBuffer(cN * 4);
  let got: Float32Array;
  try {
    upload(a, Float32Array.from(a64));
    upload(b, Float32Array.from(b64));
    matmul(a, b, c, d);
    got = new Float32Array(await readback(c, 0, cN * 4));
  } finally {
    releaseBuffer(a);
    releaseBuffer(b);
    releaseBuffer(c);
  }
  const tol = opTolerance("matmul");
  const r0 = performance.now();
  const expected = matmulRef(a64, b64, d);
  const referenceMs = performance.now() - r0;
  return verdict(
    { op: "matmul", batch, reduced: batch < images },
    row,
    [["C", got, expected, tol.tol]],
    hook,
    t0,
    referenceMs,
    note,
  );
}

/** Validates the fused AdamW step (bench/kernels.ts benchAdamW) on its parameters with seeded gradients. */
export async function validateAdamW(row: string, opt: AdamW, hook?: ResultHook): Promise<Validation> {
  const t0 = performance.now();
  const rng = new Rng(20261208);
  const params = opt.params;
  const p64: Float64Array[] = [], g64: Float64Array[] = [];
  for (const p of params) {
    p64.push(Float64Array.from(await p.toArray()));
    const g = data(rng, p.size);
    g64.push(g);
    p.grad = tensor(Float32Array.from(g), p.shape); // copied into the optimizer's gradient arena
  }
  const step = opt.stepCount + 1;
  if (step !== 1) throw new Error("validateAdamW: the optimizer has stepped already");
  opt.step();
  const results: [string, Float32Array, Float64Array, Tol][] = [];
  const tol = opTolerance("adamW").tol;
  const hyper = {
    lr: opt.lr,
    beta1: opt.beta1,
    beta2: opt.beta2,
    eps: opt.eps,
    weightDecay: opt.weightDecay,
    step,
  };
  let referenceMs = 0;
  for (const [i, p] of params.entries()) {
    const got = await p.toArray();
    const r0 = performance.now(), zero = new Float64Array(p.size);
    const want = adamWRef(p64[i], g64[i], zero, zero, hyper).p;
    referenceMs += performance.now() - r0;
    results.push([`param ${i}`, got, want, tol]);
  }
  return verdict({ op: "adamW", batch: 0, reduced: false }, row, results, hook, t0, referenceMs);
}
