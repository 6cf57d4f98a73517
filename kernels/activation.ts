// Activation kernels: exact (erf) GELU and its derivative, and a numerically stable softmax over any
// dimension with its backward. Each kernel has a key (the sizes and expression its WGSL depends on) and a
// source generator that runs only on a pipeline-cache miss. The counts that follow the batch (elements,
// softmax rows) are read from the parameters `P`, so one pipeline serves every batch size.

import { type Binding, dispatch, FLAT_ARGS, flatIndex, grid1D, kernel, params, WG } from "./runtime.ts";
import { divU, modU, paramsDecl, storageDecls } from "./wgsl.ts";

/**
 * WGSL erfc(x) with a relative error below ~2e-7 for every x (a Chebyshev fit of erfc(z)·exp(z²) in
 * t = 1/(1 + z/2), Numerical Recipes' `erfcc`; 1.05e-7 in exact arithmetic, plus f32 rounding). The
 * relative accuracy holds in the tails, where 1 + erf(x) would cancel, so GELU stays accurate for
 * large negative x. `erf_f32(x)` = 1 − erfc(x): absolute error ~1e-7 (not relative near 0).
 */
export const WGSL_ERFC = `
fn erfc_f32(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  let r = t * exp(p - z * z);
  return select(2.0 - r, r, x >= 0.0);
}
fn erf_f32(x: f32) -> f32 { return 1.0 - erfc_f32(x); }
`;

/** gelu(x) = x·Φ(x) = ½·x·erfc(−x/√2); gelu'(x) = Φ(x) + x·φ(x). */
const GELU_FNS = `${WGSL_ERFC}
fn gelu_f32(x: f32) -> f32 { return 0.5 * x * erfc_f32(-0.7071067811865476 * x); }
fn gelu_grad_f32(x: f32) -> f32 {
  return 0.5 * erfc_f32(-0.7071067811865476 * x) + x * 0.3989422804014327 * exp(-0.5 * x * x);
}
`;

/** The key of a pointwise kernel: one pipeline for every size (the count is read from `P`). */
export function pointwiseKey(name: string, expr: string, inputs: number): string {
  return `act:${name}:${inputs}:${expr}`;
}

/** out[i] = expr over `v0..vn` (`inputs` inputs of the same size), with the GELU helpers in scope. */
export function pointwiseSource(expr: string, inputs: number): string {
  const names = Array.from({ length: inputs }, (_, k) => `in${k}`);
  return `${storageDecls(names, ["out"])}
${paramsDecl(inputs + 1, ["count"])}
${GELU_FNS}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let i = ${flatIndex()};
  if (i >= P.count) { return; }
${names.map((m, k) => `  let v${k} = ${m}[i];`).join("\n")}
  out[i] = ${expr};
}`;
}

function pointwise(name: string, expr: string, inputs: Binding[], out: Binding, n: number): void {
  if (n === 0) return;
  const k = inputs.length;
  dispatch(
    kernel(pointwiseKey(name, expr, k), name, () => pointwiseSource(expr, k)),
    [...inputs, out, params(n)],
    grid1D(n),
  );
}

export function geluForward(x: Binding, out: Binding, n: number): void {
  pointwise("gelu", "gelu_f32(v0)", [x], out, n);
}

/** dx = g · gelu'(x). */
export function geluBackward(g: Binding, x: Binding, dx: Binding, n: number): void {
  pointwise("gelu_backward", "v0 * gelu_grad_f32(v1)", [g, x], dx, n);
}

/** Softmax of a tensor seen as [outer, d, inner] along the middle axis. */
export interface SoftmaxDims {
  outer: number;
  d: number;
  inner: number;
}

/** The run-time parameters of the softmax kernels: rows (outer · inner). */
const SOFTMAX_PARAMS = ["rows"];

function rowHeader(s: SoftmaxDims): string {
  return `@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let row = ${flatIndex()};
  if (row >= P.rows) { return; }
  let b = ${divU("row", s.inner)} * ${s.d * s.inner}u + ${modU("row", s.inner)};`;
}

/** The key of a softmax kernel: the softmax axis and what follows it (the rows are read from `P`). */
export function softmaxKey(s: SoftmaxDims, backward: boolean): string {
  return `${backward ? "softmax_backward" : "softmax"}:${s.d}:${s.inner}`;
}

/** y = exp(x − max) / Σ exp(x − max) along the middle axis; one invocation per row. */
export function softmaxSource(s: SoftmaxDims): string {
  const st = `${s.inner}u`;
  return `${storageDecls(["x"], ["y"])}
${paramsDecl(2, SOFTMAX_PARAMS)}
${rowHeader(s)}
  var m = x[b];
  for (var k = 1u; k < ${s.d}u; k++) { m = max(m, x[b + k * ${st}]); }
  var sum = 0.0;
  for (var k = 0u; k < ${s.d}u; k++) { let e = exp(x[b + k * ${st}] - m); y[b + k * ${st}] = e; sum += e; }
  let inv = 1.0 / sum;
  for (var k = 0u; k < ${s.d}u; k++) { y[b + k * ${st}] = y[b + k * ${st}] * inv; }
}`;
}

/** dx = y · (g − Σ g·y) along the middle axis. */
export function softmaxBackwardSource(s: SoftmaxDims): string {
  const st = `${s.inner}u`;
  return `${storageDecls(["g", "y"], ["dx"])}
${paramsDecl(3, SOFTMAX_PARAMS)}
${rowHeader(s)}
  var dot = 0.0;
  for (var k = 0u; k < ${s.d}u; k++) { dot += g[b + k * ${st}] * y[b + k * ${st}]; }
  for (var k = 0u; k < ${s.d}u; k++) { let j = b + k * ${st}; dx[j] = y[j] * (g[j] - dot); }
}`;
}

export function softmaxForward(x: Binding, y: Binding, s: SoftmaxDims): void {
  const rows = s.outer * s.inner;
  if (rows === 0 || s.d === 0) return;
  dispatch(
    kernel(softmaxKey(s, false), "softmax", () => softmaxSource(s)),
    [x, y, params(rows)],
    grid1D(rows),
  );
}

export function softmaxBackward(g: Binding, y: Binding, dx: Binding, s: SoftmaxDims): void {
  const rows = s.outer * s.inner;
  if (rows === 0 || s.d === 0) return;
  dispatch(
    kernel(softmaxKey(s, true), "softmax_backward", () => softmaxBackwardSource(s)),
    [g, y, dx, params(rows)],
    grid1D(rows),
  );
}
