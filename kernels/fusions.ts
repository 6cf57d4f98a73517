// The fusions: fused kernels that replace a chain of unfused ones, and whether each is on (the adapter
// profile's default, then the override rules of the planner's context, kernels/plan_context.ts). A leaf
// of the kernel layer's planning: kernels read it without importing the planner.

import { adapterProfile } from "./profile.ts";
import { plannerContext } from "./runtime.ts";

/**
 * Fused kernels that replace a chain of unfused ones (each has a CPU reference and a test equal to the
 * unfused path). All are on by default; "fuse=off" or "fuse.<name>=off" forces the unfused path.
 */
export const FUSIONS = [
  // ConvNeXt's 1×1 expand conv: bias + GELU in the GEMM's store (autograd/ops/pointwise_mlp.ts)
  "bias-gelu",
  // GELU's backward in the store of the next 1×1 conv's input-gradient GEMM (same op)
  "gelu-backward",
  // ConvNeXt's x + γ·branch (layer scale, identity drop path, residual add) in one pass each way, dγ
  // reduced in the backward pass (autograd/ops/layerscale.ts)
  "layerscale-residual",
  // the depthwise/direct weight gradient's sums added in its own workgroup, no second pass (depthwise.ts)
  "depthwise-weight-tree",
  // a normalisation's backward sums (two per statistic, dw and db per channel) in one reduction kernel,
  // or for GroupNorm and BatchNorm from per-row sums of g and g·(x − mean) (norm.ts normBackward)
  "norm-backward-sums",
  // BatchNorm's running statistics updated by its statistics kernel, no two extra passes (norm.ts)
  "norm-running-stats",
  // ConvNeXt's GroupNorm(1) statistics from blocks the depthwise/direct forward writes beside its output,
  // combined by one small kernel: no two passes over the tensor (autograd/ops/conv.ts conv2dWithGroupStats)
  "depthwise-norm-stats",
  // a conv's bias gradient summed by its weight-gradient kernel from the dy it reads anyway, no
  // reduction pass (kernels/conv.ts convBackwardWeight; the variants with `biasGrad`)
  "weight-grad-bias",
] as const;
export type Fusion = typeof FUSIONS[number];

/** Whether fusion `name` is on (the last matching override rule wins). */
export function fusionEnabled(name: Fusion): boolean {
  let on = !adapterProfile().fusionsOff.includes(name);
  for (const r of plannerContext().overrides) {
    if (r.target === "fuse" || r.target === `fuse.${name}`) on = r.variant === "on";
  }
  return on;
}
