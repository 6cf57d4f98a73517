// Differentiable normalisations: groupNorm, layerNorm and batchNorm2d. Each is the same computation
// on a different view of the input:
//
//   groupNorm  x[N,C,*]  view [N, G, C/G, M]   statistics over (C/G, M)   affine per (G, C/G)
//   layerNorm  x[..., L] view [rows, L]        statistics over L          affine per L
//   batchNorm  x[N,C,*]  view [N, C, M]        statistics over (N, M)     affine per C
//
// Forward: two-pass statistics, then y = (x − mean)·rstd·w + b; mean and rstd are kept as `saved`
// tensors. The kernels and the backward's formulas are in kernels/norm.ts. In BatchNorm's eval mode the
// statistics are constants. The fusions on their path (kernels/planner.ts FUSIONS) are the caller's
// choice, given as `NormFusions` (nn/layers.ts passes the planner's, nn/fusions.ts).

import {
  normAffineBackward,
  normApply,
  normBackward,
  normEvalBackward,
  normEvalRstd,
  normInputBackward,
  normStats,
  type NormView,
  runningStatsUpdate,
  statShape,
} from "../../kernels/norm.ts";
import { empty, gradOutput, numel, record, type Tensor } from "../tensor.ts";
import type { NormStatistics } from "./conv.ts";

/** A normalisation's fusions (kernels/planner.ts FUSIONS), chosen by the caller; each is on unless false. */
export interface NormFusions {
  /** "norm-backward-sums": the backward's sums in one reduction kernel (or by rows). */
  normBackwardSums?: boolean;
  /** "norm-running-stats": BatchNorm's running statistics updated by its statistics kernel. */
  normRunningStats?: boolean;
}

/** Options of `groupNorm`: its fusions, and statistics of x already taken. */
export interface GroupNormOptions extends NormFusions {
  /**
   * x's statistics [N, groups, 1, 1] with this eps, already taken by the kernel that produced x
   * (conv2dWithGroupStats); the op takes them over (and frees them with its tape node).
   */
  stats?: NormStatistics | null;
}

function checkParam(op: string, name: string, p: Tensor | null | undefined, shape: number[]): void {
  if (!p) return;
  if (p.size !== numel(shape)) {
    throw new Error(`${op}: ${name} ${p.describe()} does not match the expected shape [${shape.join(", ")}]`);
  }
}

/** y = (x − mean)·rstd·w + b, the shared forward of the three norms. */
function applyNorm(
  p: NormView,
  x: Tensor,
  mean: Tensor,
  rstd: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
): Tensor {
  const out = empty(x.shape);
  normApply(
    p,
    x.binding(),
    mean.binding(),
    rstd.binding(),
    weight?.binding() ?? null,
    bias?.binding() ?? null,
    out.binding(),
  );
  return out;
}

/** Gradients of weight and bias (null where not wanted). */
function affineGrads(
  p: NormView,
  g: Tensor,
  x: Tensor,
  mean: Tensor,
  rstd: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
): [Tensor | null, Tensor | null] {
  const gw = weight?.requiresGrad ? gradOutput(weight) : null;
  const gb = bias?.requiresGrad ? gradOutput(bias) : null;
  normAffineBackward(
    p,
    g.binding(),
    x.binding(),
    mean.binding(),
    rstd.binding(),
    gw?.binding() ?? null,
    gb?.binding() ?? null,
  );
  return [gw, gb];
}

/** dx through batch statistics. */
function inputGrad(p: NormView, g: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor | null) {
  const dx = empty(x.shape);
  normInputBackward(
    p,
    g.binding(),
    x.binding(),
    mean.binding(),
    rstd.binding(),
    weight?.binding() ?? null,
    dx.binding(),
  );
  return dx;
}

/** dx, dw, db through batch statistics with every sum in one reduction kernel (kernels/norm.ts). */
function fusedBackward(
  p: NormView,
  g: Tensor,
  x: Tensor,
  mean: Tensor,
  rstd: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
): (Tensor | null)[] {
  const dx = x.requiresGrad ? empty(x.shape) : null;
  const dw = weight?.requiresGrad ? gradOutput(weight) : null;
  const db = bias?.requiresGrad ? gradOutput(bias) : null;
  const bind = (t: Tensor | null) => t?.binding() ?? null;
  normBackward(
    p,
    g.binding(),
    x.binding(),
    mean.binding(),
    rstd.binding(),
    bind(weight),
    bind(dx),
    bind(dw),
    bind(db),
  );
  return [dx, ...(weight ? [dw] : []), ...(bias ? [db] : [])];
}

interface RunningStats {
  mean: Tensor;
  variance: Tensor;
  momentum: number;
}

/**
 * The whole op with batch statistics (GroupNorm, LayerNorm, BatchNorm in training); with `running`,
 * also updates running statistics in place (BatchNorm: unbiased variance).
 */
function normWithBatchStats(
  p: NormView,
  x: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  eps: number,
  running: RunningStats | null,
  given: NormStatistics | null,
  fusions: NormFusions,
): Tensor {
  const st = statShape(p);
  const sums = fusions.normBackwardSums !== false;
  if (given) {
    if (given.mean.size !== numel(st) || given.rstd.size !== numel(st)) {
      throw new Error(`${p.op}: given statistics ${given.mean.describe()} do not match [${st.join(", ")}]`);
    }
    return normalize(p, x, given.mean, given.rstd, weight, bias, sums);
  }
  const mean = empty(st), rstd = empty(st);
  // the running statistics are updated by the statistics kernel itself, or by two more passes
  const fuseRunning = running !== null && fusions.normRunningStats !== false;
  const variance = running && !fuseRunning ? empty(st) : null;
  normStats(x.binding(), {
    shape: p.view,
    axes: p.statAxes,
    eps,
    mean: mean.binding(),
    rstd: rstd.binding(),
    variance: variance?.binding(),
    running: fuseRunning
      ? { mean: running.mean.binding(), variance: running.variance.binding(), momentum: running.momentum }
      : undefined,
  });
  if (running && variance) {
    const count = p.statAxes.reduce((a, i) => a * p.view[i], 1);
    runningStatsUpdate(
      running.mean.size,
      running.momentum,
      count,
      mean.binding(),
      variance.binding(),
      running.mean.binding(),
      running.variance.binding(),
    );
    variance.dispose();
  }
  return normalize(p, x, mean, rstd, weight, bias, sums);
}

/**
 * The apply and its backward, with statistics of x (now owned by the tape node); `sums`: the
 * backward's sums in one kernel ("norm-backward-sums").
 */
function normalize(
  p: NormView,
  x: Tensor,
  mean: Tensor,
  rstd: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  sums: boolean,
): Tensor {
  const out = applyNorm(p, x, mean, rstd, weight, bias);
  const inputs = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  return record(out, inputs, (g) => {
    if (sums) return fusedBackward(p, g, x, mean, rstd, weight, bias);
    const dx = x.requiresGrad ? inputGrad(p, g, x, mean, rstd, weight) : null;
    const [dw, db] = affineGrads(p, g, x, mean, rstd, weight, bias);
    return [dx, ...(weight ? [dw] : []), ...(bias ? [db] : [])];
  }, [mean, rstd]);
}

function checkEps(op: string, eps: number): void {
  if (!(eps >= 0) || !Number.isFinite(eps)) {
    throw new Error(`${op}: eps must be a finite number ≥ 0, got ${eps}`);
  }
}

/**
 * Group normalisation of `x` [N, C, *] (torch.nn.functional.group_norm): statistics per sample and
 * group of C/groups channels; `weight`, `bias` of shape [C]. GroupNorm(1, C) is ConvNeXt's "LayerNorm".
 * `opts`: the fusions (default on), and x's statistics where the kernel that produced x took them.
 */
export function groupNorm(
  x: Tensor,
  groups: number,
  weight?: Tensor | null,
  bias?: Tensor | null,
  eps = 1e-5,
  opts: GroupNormOptions = {},
): Tensor {
  const op = "groupNorm";
  if (x.rank < 2) throw new Error(`${op}: expects an input [N, C, *], got ${x.describe()}`);
  const [n, c] = x.shape;
  if (!Number.isInteger(groups) || groups < 1 || c % groups !== 0) {
    throw new Error(`${op}: ${groups} groups do not divide the ${c} channels of ${x.describe()}`);
  }
  checkParam(op, "weight", weight, [c]);
  checkParam(op, "bias", bias, [c]);
  checkEps(op, eps);
  const m = numel(x.shape.slice(2));
  const plan: NormView = {
    op,
    view: [n, groups, c / groups, m],
    statAxes: [2, 3],
    affShape: [1, groups, c / groups, 1],
  };
  return normWithBatchStats(plan, x, weight ?? null, bias ?? null, eps, null, opts.stats ?? null, opts);
}

/**
 * Layer normalisation over the trailing dims `normalizedShape` (torch.nn.functional.layer_norm);
 * `weight`, `bias` of shape `normalizedShape`; `fusions` default on.
 */
export function layerNorm(
  x: Tensor,
  normalizedShape: number | number[],
  weight?: Tensor | null,
  bias?: Tensor | null,
  eps = 1e-5,
  fusions: NormFusions = {},
): Tensor {
  const op = "layerNorm";
  const ns = typeof normalizedShape === "number" ? [normalizedShape] : normalizedShape;
  const tail = x.shape.slice(x.rank - ns.length);
  if (ns.length === 0 || ns.length > x.rank || !ns.every((d, i) => d === tail[i])) {
    throw new Error(
      `${op}: normalized shape [${ns.join(", ")}] does not match the trailing dims of ${x.describe()}`,
    );
  }
  checkParam(op, "weight", weight, ns);
  checkParam(op, "bias", bias, ns);
  checkEps(op, eps);
  const l = numel(ns);
  const plan: NormView = { op, view: [x.size / Math.max(l, 1), l], statAxes: [1], affShape: [1, l] };
  return normWithBatchStats(plan, x, weight ?? null, bias ?? null, eps, null, null, fusions);
}

/**
 * Batch normalisation of `x` [N, C, *] (torch.nn.functional.batch_norm). In training (or when no
 * running statistics are given) it normalises with the batch statistics (biased variance) and, when
 * `runningMean`/`runningVar` are given, updates them in place on the GPU:
 * running = (1 − momentum)·running + momentum·batch, with the unbiased variance for `runningVar`.
 * In eval it normalises with the running statistics. `fusions` default on.
 */
export function batchNorm2d(
  x: Tensor,
  runningMean: Tensor | null,
  runningVar: Tensor | null,
  weight: Tensor | null,
  bias: Tensor | null,
  training: boolean,
  momentum = 0.1,
  eps = 1e-5,
  fusions: NormFusions = {},
): Tensor {
  const op = "batchNorm2d";
  if (x.rank < 2) throw new Error(`${op}: expects an input [N, C, *], got ${x.describe()}`);
  const [n, c] = x.shape;
  checkParam(op, "weight", weight, [c]);
  checkParam(op, "bias", bias, [c]);
  checkParam(op, "runningMean", runningMean, [c]);
  checkParam(op, "runningVar", runningVar, [c]);
  checkEps(op, eps);
  if (!!runningMean !== !!runningVar) {
    throw new Error(`${op}: give both runningMean and runningVar, or neither`);
  }
  const m = numel(x.shape.slice(2));
  const plan: NormView = { op, view: [n, c, m], statAxes: [0, 2], affShape: [1, c, 1] };
  const useBatch = training || !runningMean;
  if (useBatch) {
    const R = n * m;
    if (training && R <= 1) {
      throw new Error(`${op}: expected more than 1 value per channel when training, got ${x.describe()}`);
    }
    const running = training && runningMean && runningVar
      ? { mean: runningMean, variance: runningVar, momentum }
      : null;
    return normWithBatchStats(plan, x, weight, bias, eps, running, null, fusions);
  }
  // eval: the running statistics are constants
  const rstd = empty(statShape(plan));
  normEvalRstd(statShape(plan), eps, runningVar!.binding(), rstd.binding());
  const mean = runningMean!;
  const out = applyNorm(plan, x, mean, rstd, weight, bias);
  const inputs = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  return record(out, inputs, (g) => {
    let dx: Tensor | null = null;
    if (x.requiresGrad) {
      dx = empty(x.shape);
      normEvalBackward(plan, g.binding(), rstd.binding(), weight?.binding() ?? null, dx.binding());
    }
    const [dw, db] = affineGrads(plan, g, x, mean, rstd, weight, bias);
    return [dx, ...(weight ? [dw] : []), ...(bias ? [db] : [])];
  }, [rstd]);
}
