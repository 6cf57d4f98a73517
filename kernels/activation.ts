// Activation kernels: exact (erf) GELU and its derivative, and a numerically stable softmax over any
// dimension with its backward. Each kernel has a key (the sizes and expression its WGSL depends on) and a
// source generator that runs only on a pipeline-cache miss.

import { type Binding, dispatch, grid1D, kernel, linearIndex, WG } from "./runtime.ts";
import { storageDecls } from "./wgsl.ts";

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

export function pointwiseKey(name: string, expr: string, inputs: number, n: number): string {
  return `act:${name}:${n}:${inputs}:${expr}`;
}

/** out[i] = expr over `v0..vn` (`inputs` inputs of the same size `n`), with the GELU helpers in scope. */
export function pointwiseSource(expr: string, inputs: number, n: number): string {
  const grid = grid1D(n);
  const names = Array.from({ length: inputs }, (_, k) => `in${k}`);
  return `${storageDecls(names, ["out"])}
${GELU_FNS}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = ${linearIndex(grid)};
  if (i >= ${n}u) { return; }
${names.map((m, k) => `  let v${k} = ${m}[i];`).join("\n")}
  out[i] = ${expr};
}`;
}

function pointwise(name: string, expr: string, inputs: Binding[], out: Binding, n: number): void {
  if (n === 0) return;
  const k = inputs.length;
  dispatch(
    kernel(pointwiseKey(name, expr, k, n), name, () => pointwiseSource(expr, k, n)),
    [...inputs, out],
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

function rowHeader(s: SoftmaxDims, grid: [number, number]): string {
  return `@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = ${linearIndex(grid)};
  if (row >= ${s.outer * s.inner}u) { return; }
  let b = (row / ${s.inner}u) * ${s.d * s.inner}u + row % ${s.inner}u;`;
}

export function softmaxKey(s: SoftmaxDims, backward: boolean): string {
  return `${backward ? "softmax_backward" : "softmax"}:${s.outer}:${s.d}:${s.inner}`;
}

/** y = exp(x − max) / Σ exp(x − max) along the middle axis; one invocation per row. */
export function softmaxSource(s: SoftmaxDims): string {
  const grid = grid1D(s.outer * s.inner);
  const st = `${s.inner}u`;
  return `${storageDecls(["x"], ["y"])}
${rowHeader(s, grid)}
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
  const grid = grid1D(s.outer * s.inner);
  const st = `${s.inner}u`;
  return `${storageDecls(["g", "y"], ["dx"])}
${rowHeader(s, grid)}
  var dot = 0.0;
  for (var k = 0u; k < ${s.d}u; k++) { dot += g[b + k * ${st}] * y[b + k * ${st}]; }
  for (var k = 0u; k < ${s.d}u; k++) { let j = b + k * ${st}; dx[j] = y[j] * (g[j] - dot); }
}`;
}

export function softmaxForward(x: Binding, y: Binding, s: SoftmaxDims): void {
  const rows = s.outer * s.inner;
  if (rows === 0 || s.d === 0) return;
  dispatch(kernel(softmaxKey(s, false), "softmax", () => softmaxSource(s)), [x, y], grid1D(rows));
}

export function softmaxBackward(g: Binding, y: Binding, dx: Binding, s: SoftmaxDims): void {
  const rows = s.outer * s.inner;
  if (rows === 0 || s.d === 0) return;
  dispatch(
    kernel(softmaxKey(s, true), "softmax_backward", () => softmaxBackwardSource(s)),
    [g, y, dx],
    grid1D(rows),
  );
}
