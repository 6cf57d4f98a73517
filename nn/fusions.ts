// The planner's fusion choices in the words of the ops that take them. The ops (autograd/ops/) never
// ask the planner: the layers that call them do, once per forward, and pass these on. The planner
// decides from the adapter's profile and the overrides ("fuse=off", "fuse.<name>=off").

import { fusionEnabled } from "../kernels/planner.ts";
import type { NormFusions } from "../autograd/ops/norm.ts";
import type { ConvGroupNormFusions } from "../autograd/ops/convnext_block.ts";

/** Every fusion an op takes as an argument, as the planner sets it now. */
export interface PlanFusions extends NormFusions, ConvGroupNormFusions {
  normBackwardSums: boolean;
  normRunningStats: boolean;
  depthwiseNormStats: boolean;
  /** "bias-gelu" (pointwiseMlp) */
  biasGelu: boolean;
  /** "gelu-backward" (pointwiseMlp) */
  geluBackward: boolean;
  /** "layerscale-residual": layerScaleResidual in place of add(mul(γ, branch), x) */
  layerscaleResidual: boolean;
}

/** The planner's choice of each fusion an op takes. */
export function planFusions(): PlanFusions {
  return {
    normBackwardSums: fusionEnabled("norm-backward-sums"),
    normRunningStats: fusionEnabled("norm-running-stats"),
    depthwiseNormStats: fusionEnabled("depthwise-norm-stats"),
    biasGelu: fusionEnabled("bias-gelu"),
    geluBackward: fusionEnabled("gelu-backward"),
    layerscaleResidual: fusionEnabled("layerscale-residual"),
  };
}
