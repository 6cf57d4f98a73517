// Differentiable normalisations: groupNorm, layerNorm and batchNorm2d. Each is the same computation
// on a different view of the input:
//
//   groupNorm  x[N,C,*]  view [N, G, C/G, M]   statistics over (C/G, M)   affine per (G, C/G)
//   layerNorm  x[..., L] view [rows, L]        statistics over L          affine per L
//   batchNorm  x[N,C,*]  view [N, C, M]        statistics over (N, M)     affine per C
//
// Forward: two-pass statistics (kernels/norm.ts), then y = (x − mean)·rstd·w + b. Mean and rstd are
// kept as `saved` tensors. Backward with x̂ = (x − mean)·rstd and ĝ = g·w:
//   dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ·x̂))   (means over the statistic's elements)
//   dw = Σ g·x̂,  db = Σ g                        (sums over everything but the channel)
// In BatchNorm's eval mode the statistics are constants and dx = g·w·rstd.

import { elementwise, type EwInput } from "../../kernels/elementwise.ts";
import { normStats } from "../../kernels/norm.ts";
import { reduceExprs } from "../../kernels/reduce.ts";
import { f32 } from "../../kernels/wgsl.ts";
import { empty, numel, record, type Tensor } from "../tensor.ts";

interface NormPlan {
  op: string;
  /** View of x. */
  view: number[];
  /** Axes of the view the statistics are taken over. */
  statAxes: number[];
  /** Shape (same rank as the view) that weight and bias broadcast from. */
  affShape: number[];
}

function keptShape(view: number[], axes: number[]): number[] {
  return view.map((d, i) => (axes.includes(i) ? 1 : d));
}

function checkParam(op: string, name: string, p: Tensor | null | undefined, shape: number[]): void {
  if (!p) return;
  if (p.size !== numel(shape)) {
    throw new Error(`${op}: ${name} ${p.describe()} does not match the expected shape [${shape.join(", ")}]`);
  }
}

const inp = (t: Tensor, shape: readonly number[]): EwInput => ({ binding: t.binding(), shape });

/** y = (x − mean)·rstd·w + b, the shared forward of the three norms. */
function applyNorm(
  p: NormPlan,
  x: Tensor,
  mean: Tensor,
  rstd: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
): Tensor {
  const statShape = keptShape(p.view, p.statAxes);
  const inputs = [inp(x, p.view), inp(mean, statShape), inp(rstd, statShape)];
  let expr = "(v0 - v1) * v2";
  if (weight) {
    expr = `${expr} * v${inputs.length}`;
    inputs.push(inp(weight, p.affShape));
  }
  if (bias) {
    expr = `${expr} + v${inputs.length}`;
    inputs.push(inp(bias, p.affShape));
  }
  const out = empty(x.shape);
  elementwise(`${p.op}_apply`, expr, inputs, out.binding(), p.view);
  return out;
}

/** Gradients of weight and bias: Σ g·x̂ and Σ g over every axis but the affine ones. */
function affineGrads(
  p: NormPlan,
  g: Tensor,
  x: Tensor,
  mean: Tensor,
  rstd: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
): [Tensor | null, Tensor | null] {
  const wantW = !!weight?.requiresGrad, wantB = !!bias?.requiresGrad;
  if (!wantW && !wantB) return [null, null];
  const statShape = keptShape(p.view, p.statAxes);
  const affAxes = p.view.map((_, i) => i).filter((i) => p.affShape[i] === 1);
  const exprs: string[] = [], outs: Tensor[] = [];
  const gw = wantW ? empty(weight!.shape) : null, gb = wantB ? empty(bias!.shape) : null;
  if (gw) {
    exprs.push("v0 * (v1 - v2) * v3");
    outs.push(gw);
  }
  if (gb) {
    exprs.push("v0");
    outs.push(gb);
  }
  reduceExprs(`${p.op}_affine_backward`, {
    shape: p.view,
    axes: affAxes,
    inputs: [inp(g, p.view), inp(x, p.view), inp(mean, statShape), inp(rstd, statShape)],
    exprs,
    outs: outs.map((t) => t.binding()),
  });
  return [gw, gb];
}

/** dx through batch statistics. */
function inputGrad(p: NormPlan, g: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor | null) {
  const statShape = keptShape(p.view, p.statAxes);
  const R = p.statAxes.reduce((a, i) => a * p.view[i], 1);
  const s1 = empty(statShape), s2 = empty(statShape);
  const inputs = [inp(g, p.view), inp(x, p.view), inp(mean, statShape), inp(rstd, statShape)];
  const gw = weight ? "(v0 * v4)" : "v0";
  if (weight) inputs.push(inp(weight, p.affShape));
  reduceExprs(`${p.op}_backward_sums`, {
    shape: p.view,
    axes: p.statAxes,
    inputs,
    exprs: [gw, `${gw} * (v1 - v2) * v3`],
    outs: [s1.binding(), s2.binding()],
    scale: 1 / R,
  });
  const k = inputs.length;
  const dx = empty(x.shape);
  elementwise(
    `${p.op}_backward_input`,
    `v3 * (${gw} - v${k} - (v1 - v2) * v3 * v${k + 1})`,
    [...inputs, inp(s1, statShape), inp(s2, statShape)],
    dx.binding(),
    p.view,
  );
  s1.dispose();
  s2.dispose();
  return dx;
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
  p: NormPlan,
  x: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  eps: number,
  running: RunningStats | null = null,
): Tensor {
  const statShape = keptShape(p.view, p.statAxes);
  const R = p.statAxes.reduce((a, i) => a * p.view[i], 1);
  const mean = empty(statShape), rstd = empty(statShape);
  const variance = running ? empty(statShape) : null;
  normStats(x.binding(), {
    shape: p.view,
    axes: p.statAxes,
    eps,
    mean: mean.binding(),
    rstd: rstd.binding(),
    variance: variance?.binding(),
  });
  if (running && variance) {
    const k = running.momentum;
    const c = [running.mean.size];
    elementwise(
      "running_mean",
      `o * ${f32(1 - k)} + v0 * ${f32(k)}`,
      [{ binding: mean.binding(), shape: c }],
      running.mean.binding(),
      c,
      true,
    );
    elementwise(
      "running_var",
      `o * ${f32(1 - k)} + v0 * ${f32((k * R) / (R - 1))}`,
      [{ binding: variance.binding(), shape: c }],
      running.variance.binding(),
      c,
      true,
    );
    variance.dispose();
  }
  const out = applyNorm(p, x, mean, rstd, weight, bias);
  const inputs = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  return record(out, inputs, (g) => {
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
 */
export function groupNorm(
  x: Tensor,
  groups: number,
  weight?: Tensor | null,
  bias?: Tensor | null,
  eps = 1e-5,
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
  const plan: NormPlan = {
    op,
    view: [n, groups, c / groups, m],
    statAxes: [2, 3],
    affShape: [1, groups, c / groups, 1],
  };
  return normWithBatchStats(plan, x, weight ?? null, bias ?? null, eps);
}

/**
 * Layer normalisation over the trailing dims `normalizedShape` (torch.nn.functional.layer_norm);
 * `weight`, `bias` of shape `normalizedShape`.
 */
export function layerNorm(
  x: Tensor,
  normalizedShape: number | number[],
  weight?: Tensor | null,
  bias?: Tensor | null,
  eps = 1e-5,
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
  const plan: NormPlan = { op, view: [x.size / Math.max(l, 1), l], statAxes: [1], affShape: [1, l] };
  return normWithBatchStats(plan, x, weight ?? null, bias ?? null, eps);
}

/**
 * Batch normalisation of `x` [N, C, *] (torch.nn.functional.batch_norm). In training (or when no
 * running statistics are given) it normalises with the batch statistics (biased variance) and, when
 * `runningMean`/`runningVar` are given, updates them in place on the GPU:
 * running = (1 − momentum)·running + momentum·batch, with the unbiased variance for `runningVar`.
 * In eval it normalises with the running statistics.
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
  const plan: NormPlan = { op, view: [n, c, m], statAxes: [0, 2], affShape: [1, c, 1] };
  const useBatch = training || !runningMean;
  if (useBatch) {
    const R = n * m;
    if (training && R <= 1) {
      throw new Error(`${op}: expected more than 1 value per channel when training, got ${x.describe()}`);
    }
    const running = training && runningMean && runningVar
      ? { mean: runningMean, variance: runningVar, momentum }
      : null;
    return normWithBatchStats(plan, x, weight, bias, eps, running);
  }
  // eval: the running statistics are constants
  const statShape = [1, c, 1];
  const rstd = empty(statShape);
  elementwise(
    "bn_eval_rstd",
    `1.0 / sqrt(v0 + ${f32(eps)})`,
    [{ binding: runningVar!.binding(), shape: statShape }],
    rstd.binding(),
    statShape,
  );
  const mean = runningMean!;
  const out = applyNorm(plan, x, mean, rstd, weight, bias);
  const inputs = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  return record(out, inputs, (g) => {
    let dx: Tensor | null = null;
    if (x.requiresGrad) {
      dx = empty(x.shape);
      const ins = [inp(g, plan.view), inp(rstd, statShape), ...(weight ? [inp(weight, plan.affShape)] : [])];
      elementwise(`${op}_eval_backward`, weight ? "v0 * v1 * v2" : "v0 * v1", ins, dx.binding(), plan.view);
    }
    const [dw, db] = affineGrads(plan, g, x, mean, rstd, weight, bias);
    return [dx, ...(weight ? [dw] : []), ...(bias ? [db] : [])];
  }, [rstd]);
}
