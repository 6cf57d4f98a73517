// Differentiable 2-D convolution with PyTorch semantics: NCHW input, OIHW weight, optional bias,
// square kernel, one stride and one zero padding for both spatial dimensions, grouped channels.

import {
  convBackwardBias,
  convBackwardInput,
  convBackwardWeight,
  convForward,
  convForwardParts,
  convOutSize,
  type ConvShape,
} from "../../kernels/conv.ts";
import { gatherPatches, scatterPatches } from "../../kernels/patches.ts";
import { normStatsFromParts } from "../../kernels/norm.ts";
import { planConv } from "../../kernels/planner.ts";
import { currentModule, empty, gradOutput, isGradEnabled, record, type Tensor } from "../tensor.ts";
import { reshape } from "./shape.ts";

export interface Conv2dOptions {
  stride?: number;
  padding?: number;
  groups?: number;
}

/** Checks the arguments of conv2d and returns the sizes of the convolution. */
export function conv2dShape(
  x: Tensor,
  w: Tensor,
  b: Tensor | null | undefined,
  opts: Conv2dOptions = {},
): ConvShape {
  const { stride = 1, padding = 0, groups = 1 } = opts;
  const desc = () => `input ${x.describe()}, weight ${w.describe()}${b ? `, bias ${b.describe()}` : ""}`;
  const fail = (msg: string): never => {
    throw new Error(`conv2d: ${msg} (${desc()})`);
  };
  if (x.rank !== 4) fail("input must be 4-D [N, C, H, W]");
  if (w.rank !== 4) fail("weight must be 4-D [O, C/groups, kH, kW]");
  if (!Number.isInteger(stride) || stride < 1) fail(`stride must be a positive integer, got ${stride}`);
  if (!Number.isInteger(padding) || padding < 0) {
    fail(`padding must be a non-negative integer, got ${padding}`);
  }
  if (!Number.isInteger(groups) || groups < 1) fail(`groups must be a positive integer, got ${groups}`);
  const [n, c, h, W] = x.shape;
  const [o, cg, kh, kw] = w.shape;
  if (kh !== kw) fail(`only square kernels are supported, got ${kh}×${kw}`);
  if (c % groups !== 0) fail(`groups = ${groups} does not divide the ${c} input channels`);
  if (o % groups !== 0) fail(`groups = ${groups} does not divide the ${o} output channels`);
  if (cg * groups !== c) {
    fail(
      `input has ${c} channels but the weight expects ${cg} in-channels × ${groups} group${
        groups > 1 ? "s" : ""
      } = ${cg * groups}`,
    );
  }
  if (kh < 1) fail("kernel size must be at least 1");
  if (kh > h + 2 * padding || kw > W + 2 * padding) {
    fail(`kernel ${kh}×${kw} is larger than the padded input ${h + 2 * padding}×${W + 2 * padding}`);
  }
  if (b && (b.rank !== 1 || b.shape[0] !== o)) fail(`bias must have shape [${o}]`);
  return {
    n,
    c,
    h,
    w: W,
    o,
    k: kh,
    stride,
    pad: padding,
    groups,
    oh: convOutSize(h, kh, stride, padding),
    ow: convOutSize(W, kw, stride, padding),
  };
}

/**
 * conv2d(x, w, b?, {stride, padding, groups}) like `torch.nn.functional.conv2d`: x [N, C, H, W],
 * w [O, C/groups, k, k], b [O]; returns [N, O, OH, OW] with OH = ⌊(H + 2·padding − k)/stride⌋ + 1.
 */
export function conv2d(x: Tensor, w: Tensor, b?: Tensor | null, opts: Conv2dOptions = {}): Tensor {
  return convWith(x, w, b ?? null, conv2dShape(x, w, b, opts), null).y;
}

/** Mean and 1/sqrt(var + eps) of a normalisation's statistics, shaped as it keeps them. */
export interface NormStatistics {
  mean: Tensor;
  rstd: Tensor;
}

/**
 * conv2d, and the statistics `groupNorm(y, groups, ·, ·, eps)` needs, taken in the conv's store where
 * its forward variant can (depthwise/direct): each output block writes its count, mean and M2, and one
 * small kernel combines them (kernels/norm.ts normStatsFromParts) instead of the two passes over y.
 * `stats` is null where the variant cannot. Calling it is fusion "depthwise-norm-stats" (the caller's
 * choice: autograd/ops/convnext_block.ts convGroupNorm).
 */
export function conv2dWithGroupStats(
  x: Tensor,
  w: Tensor,
  b: Tensor | null,
  opts: Conv2dOptions,
  groups: number,
  eps: number,
): { y: Tensor; stats: NormStatistics | null } {
  const s = conv2dShape(x, w, b, opts);
  if (!Number.isInteger(groups) || groups < 1 || s.o % groups !== 0) {
    throw new Error(`conv2dWithGroupStats: ${groups} groups do not divide the ${s.o} output channels`);
  }
  return convWith(x, w, b, s, { groups, eps });
}

/** The op behind conv2d: plans every pass now (so the plan names the layer), runs the forward, records. */
function convWith(
  x: Tensor,
  w: Tensor,
  bias: Tensor | null,
  s: ConvShape,
  norm: { groups: number; eps: number } | null,
): { y: Tensor; stats: NormStatistics | null } {
  const layer = currentModule();
  const forward = planConv(s, "forward", layer).variant;
  // Windows that do not overlap and need no padding (ConvNeXt's 2×2 stride-2 downsampling, the
  // ResNet 1×1 stride-2 convs) make a 1×1 conv over gathered patches: one GEMM instead of a direct
  // convolution (4× faster on the full-size downsampling layers on lavapipe).
  if (forward === "patches") {
    const p = patches(x, s);
    return { y: conv2d(p, reshape(w, [s.o, s.c * s.k * s.k, 1, 1]), bias), stats: null };
  }
  const inputs = bias ? [x, w, bias] : [x, w];
  const tracking = isGradEnabled() && inputs.some((t) => t.requiresGrad);
  const inputGrad = tracking && x.requiresGrad ? planConv(s, "inputGrad", layer).variant : "";
  const weightGrad = tracking && w.requiresGrad ? planConv(s, "weightGrad", layer).variant : "";
  const y = empty([s.n, s.o, s.oh, s.ow]);
  const perImage = norm ? convForwardParts(s, forward) : 0;
  const parts = perImage ? empty([s.n * perImage, 4]) : null;
  convForward(
    x.binding(),
    w.binding(),
    bias ? bias.binding() : null,
    y.binding(),
    s,
    forward,
    parts?.binding(),
  );
  let stats: NormStatistics | null = null;
  if (norm && parts) {
    stats = { mean: empty([s.n, norm.groups, 1, 1]), rstd: empty([s.n, norm.groups, 1, 1]) };
    normStatsFromParts(parts.binding(), {
      stats: s.n * norm.groups,
      parts: perImage / norm.groups,
      eps: norm.eps,
      mean: stats.mean.binding(),
      rstd: stats.rstd.binding(),
    });
    parts.dispose();
  }
  const out = record(y, inputs, (g) => {
    let gx: Tensor | null = null, gw: Tensor | null = null, gb: Tensor | null = null;
    if (x.requiresGrad) {
      gx = empty(x.shape);
      convBackwardInput(g.binding(), w.binding(), gx.binding(), s, inputGrad || undefined);
    }
    if (bias?.requiresGrad) gb = gradOutput(bias);
    if (w.requiresGrad) {
      gw = gradOutput(w);
      // the bias gradient with it (in the same kernel where the variant can)
      convBackwardWeight(g.binding(), x.binding(), gw.binding(), s, weightGrad || undefined, gb?.binding());
    } else if (gb) convBackwardBias(g.binding(), gb.binding(), s);
    return bias ? [gx, gw, gb] : [gx, gw];
  });
  return { y: out, stats };
}

/** x [N, C, H, W] → [N, C·k·k, OH, OW], the non-overlapping k×k windows of a stride-`stride` conv. */
function patches(x: Tensor, s: ConvShape): Tensor {
  const ps = { n: s.n, c: s.c, h: s.h, w: s.w, k: s.k, stride: s.stride, oh: s.oh, ow: s.ow };
  const y = empty([s.n, s.c * s.k * s.k, s.oh, s.ow]);
  gatherPatches(x.binding(), y.binding(), ps);
  return record(y, [x], (g) => {
    const gx = empty(x.shape);
    scatterPatches(g.binding(), gx.binding(), ps);
    return [gx];
  });
}
