// CPU reference of the fused layer scale + residual add (kernels/layerscale.ts) in f64, NCHW as
// [n, c, p = h·w]: out = x + γ[c]·branch; backward dx = g, dbranch = γ[c]·g, dγ[c] = Σ_{n,p} g·branch.

import type { LayerScaleShape } from "../layerscale.ts";

export function layerScaleResidualRef(
  x: Float64Array,
  gamma: Float64Array,
  branch: Float64Array,
  s: LayerScaleShape,
): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] + gamma[Math.floor(i / s.p) % s.c] * branch[i];
  return out;
}

export function layerScaleResidualBackwardRef(
  g: Float64Array,
  branch: Float64Array,
  gamma: Float64Array,
  s: LayerScaleShape,
): { dx: Float64Array; dbranch: Float64Array; dgamma: Float64Array } {
  const dbranch = new Float64Array(g.length);
  const dgamma = new Float64Array(s.c);
  for (let i = 0; i < g.length; i++) {
    const c = Math.floor(i / s.p) % s.c;
    dbranch[i] = gamma[c] * g[i];
    dgamma[c] += g[i] * branch[i];
  }
  return { dx: Float64Array.from(g), dbranch, dgamma };
}

/** The layer scale alone (autograd: mul(reshape(γ, [c, 1, 1]), x); nn.LayerScaler): out = γ[c]·x. */
export function layerScaleRef(x: Float64Array, gamma: Float64Array, s: LayerScaleShape): Float64Array {
  return layerScaleResidualRef(new Float64Array(x.length), gamma, x, s);
}

/** dx = γ[c]·g, dγ[c] = Σ_{n,p} g·x. */
export function layerScaleBackwardRef(
  g: Float64Array,
  x: Float64Array,
  gamma: Float64Array,
  s: LayerScaleShape,
): { dx: Float64Array; dgamma: Float64Array } {
  const r = layerScaleResidualBackwardRef(g, x, gamma, s);
  return { dx: r.dbranch, dgamma: r.dgamma };
}
