// ConvNeXt's block body as differentiable ops, each taking its fusions (kernels/planner.ts FUSIONS) as
// arguments, on unless false. The nn module that runs a block (nn/convnext.ts) asks the planner once
// per forward and passes its choices on:
//   convGroupNorm       dwconv 7×7 → GroupNorm(1): the statistics taken in the conv's store
//                       ("depthwise-norm-stats"), the norm's backward sums in one kernel
//                       ("norm-backward-sums")
//   pointwiseMlp        1×1 (expand) → GELU → 1×1 (project) as one op: "bias-gelu", "gelu-backward"
//                       (autograd/ops/pointwise_mlp.ts)
//   layerScaleResidual  x + γ·branch in one pass each way (autograd/ops/layerscale.ts); fusion
//                       "layerscale-residual" is the choice of it over add(mul(γ, branch), x)

import type { Tensor } from "../tensor.ts";
import { conv2d, type Conv2dOptions, conv2dWithGroupStats } from "./conv.ts";
import { groupNorm, type NormFusions } from "./norm.ts";

export { pointwiseMlp, type PointwiseMlpOptions } from "./pointwise_mlp.ts";
export { layerScaleResidual } from "./layerscale.ts";

/** The GroupNorm after the conv: its groups, affine parameters and eps. */
export interface GroupNormArgs {
  groups: number;
  weight: Tensor | null;
  bias: Tensor | null;
  eps: number;
}

/** Fusions of `convGroupNorm`, each on unless false. */
export interface ConvGroupNormFusions extends NormFusions {
  /** "depthwise-norm-stats": the norm's statistics from blocks the conv's store writes. */
  depthwiseNormStats?: boolean;
}

/**
 * groupNorm(conv2d(x, w, b, conv), norm.groups, norm.weight, norm.bias, norm.eps) as two tape nodes.
 * With "depthwise-norm-stats" the conv's store takes the norm's statistics where its forward variant
 * can (depthwise/direct; conv2dWithGroupStats), and the norm takes them over: no two passes over the
 * conv's output. Gradients flow to every input that requires one.
 */
export function convGroupNorm(
  x: Tensor,
  w: Tensor,
  b: Tensor | null,
  conv: Conv2dOptions,
  norm: GroupNormArgs,
  fusions: ConvGroupNormFusions = {},
): Tensor {
  const { groups, weight, bias, eps } = norm;
  const sums = { normBackwardSums: fusions.normBackwardSums };
  if (fusions.depthwiseNormStats === false) {
    return groupNorm(conv2d(x, w, b, conv), groups, weight, bias, eps, sums);
  }
  const { y, stats } = conv2dWithGroupStats(x, w, b, conv, groups, eps);
  return groupNorm(y, groups, weight, bias, eps, { ...sums, stats });
}
