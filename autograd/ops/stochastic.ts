// Stochastic depth (drop path) with torchvision's `stochastic_depth(mode="batch")` semantics.

import type { Rng } from "../random.ts";
import type { Tensor } from "../tensor.ts";
import { scale } from "./elementwise.ts";

/**
 * Drops the residual branch `x` for the whole batch with probability `p`, else scales it by
 * 1/(1 − p) (one draw from `rng` on the CPU per call). Returns `x` itself (no copy, no draw) when not
 * training or when p = 0, like torchvision.
 */
export function stochasticDepth(x: Tensor, p: number, training: boolean, rng: Rng): Tensor {
  if (!(p >= 0 && p <= 1)) throw new Error(`stochasticDepth: drop probability must be in [0, 1], got ${p}`);
  if (!training || p === 0) return x;
  const survival = 1 - p;
  const keep = rng.uniform() < survival;
  return scale(x, keep ? 1 / survival : 0);
}
