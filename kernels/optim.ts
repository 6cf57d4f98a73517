// The fused AdamW update (PyTorch's torch.optim.AdamW, amsgrad off) over flat buffers: one invocation per
// float, every parameter of a model in one dispatch (nn/optim.ts lays them out in arenas).
//
//   p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
//   p ← p − lr/(1−β1^t) · m / (√v / √(1−β2^t) + eps)
//
// The step's scalars live in a small storage buffer (`adamwScalars`), so neither the schedule nor the step
// count recompiles anything.
//
// Contract
//   ADAMW_SCALARS (8)                  floats in the scalar buffer
//   adamwScalars({lr, beta1, beta2, eps, weightDecay, step}) → Float32Array   computed in f64 like PyTorch,
//                                      rounded to f32 like its scalar arguments
//   key(n), source(n)                  the pipeline key and its WGSL for n floats (generated on a miss only)
//   adamw(n, grads, scalars, params, m, v)   the launcher: params, m and v updated in place

import { type Binding, dispatch, grid1D, kernel, linearIndex, WG } from "./runtime.ts";

export const ADAMW_SCALARS = 8;

export interface AdamWStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1 for the first step. */
  step: number;
}

/** The scalar buffer's contents: [1 − lr·wd, β1, 1 − β1, β2, 1 − β2, lr/(1 − β1^t), √(1 − β2^t), eps]. */
export function adamwScalars(s: AdamWStep): Float32Array {
  return Float32Array.of(
    1 - s.lr * s.weightDecay,
    s.beta1,
    1 - s.beta1,
    s.beta2,
    1 - s.beta2,
    s.lr / (1 - s.beta1 ** s.step),
    Math.sqrt(1 - s.beta2 ** s.step),
    s.eps,
  );
}

export function key(n: number): string {
  return `adamw:${n}`;
}

export function source(n: number): string {
  const grid = grid1D(n);
  return `@group(0) @binding(0) var<storage, read> g: array<f32>;
@group(0) @binding(1) var<storage, read> hp: array<f32, ${ADAMW_SCALARS}>;
@group(0) @binding(2) var<storage, read_write> p: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = ${linearIndex(grid)};
  if (i >= ${n}u) { return; }
  let gi = g[i];
  let pi = p[i] * hp[0];
  let mi = m[i] * hp[1] + gi * hp[2];
  let vi = v[i] * hp[3] + hp[4] * gi * gi;
  m[i] = mi;
  v[i] = vi;
  let denom = sqrt(vi) / hp[6] + hp[7];
  p[i] = pi + (-hp[5]) * (mi / denom);
}`;
}

/** Records one AdamW update of `n` floats. */
export function adamw(
  n: number,
  grads: Binding,
  scalars: Binding,
  params: Binding,
  m: Binding,
  v: Binding,
): void {
  dispatch(kernel(key(n), "adamw", () => source(n)), [grads, scalars, params, m, v], grid1D(n));
}
