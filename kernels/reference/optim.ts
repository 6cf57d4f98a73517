// CPU reference of the fused AdamW step (kernels/optim.ts; nn/optim.ts AdamW) in f64, PyTorch's
// update: decoupled weight decay, then the bias-corrected moments.

import type { AdamWStep } from "../optim.ts";

/** One AdamW step of parameters p with gradients g and moments m, v (new arrays returned). */
export function adamWRef(
  p: Float64Array,
  g: Float64Array,
  m: Float64Array,
  v: Float64Array,
  s: AdamWStep,
): { p: Float64Array; m: Float64Array; v: Float64Array } {
  const out = { p: new Float64Array(p.length), m: new Float64Array(p.length), v: new Float64Array(p.length) };
  const bc1 = 1 - s.beta1 ** s.step, bc2 = Math.sqrt(1 - s.beta2 ** s.step);
  for (let i = 0; i < p.length; i++) {
    const mi = s.beta1 * m[i] + (1 - s.beta1) * g[i], vi = s.beta2 * v[i] + (1 - s.beta2) * g[i] * g[i];
    out.m[i] = mi;
    out.v[i] = vi;
    out.p[i] = p[i] * (1 - s.lr * s.weightDecay) - (s.lr / bc1) * mi / (Math.sqrt(vi) / bc2 + s.eps);
  }
  return out;
}
