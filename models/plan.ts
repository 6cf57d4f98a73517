// A model's kernel plan: one training step (forward, cross-entropy, backward) of the model built on
// meta runs in a dry run with the planner's log on, so every conv and matmul pass that a real step
// records is listed with the variant that would run it and why (default, autotune or override). The
// same dry run queues the shapes autotune should time, which is how the trainer tunes before its first
// step without touching the real model, its generators or the GPU.

import { crossEntropy } from "../autograd/ops/loss.ts";
import { meta, noGrad } from "../autograd/tensor.ts";
import { collectPipelines, dryRun, type PipelineRequest } from "../kernels/runtime.ts";
import { type PlanEntry, startPlanLog, stopPlanLog } from "../kernels/planner.ts";
import { onMeta, traceModules } from "../nn/module.ts";
import { buildModel, type ModelOptions } from "./zoo.ts";

/** The kernel plan of one training step of `stage` at `batch` (images of `imageSize`²). */
export function trainingStepPlan(
  stage: string,
  opts: ModelOptions = {},
  batch = 64,
  imageSize = 32,
): PlanEntry[] {
  const model = onMeta(() => buildModel(stage, opts));
  model.train();
  startPlanLog();
  try {
    dryRun(() =>
      traceModules(model, () => {
        const x = meta([batch, model.config.inChannels, imageSize, imageSize]);
        crossEntropy(model.forward(x), new Int32Array(batch)).backward();
      })
    );
  } catch (e) {
    stopPlanLog();
    throw e;
  }
  return stopPlanLog();
}

/**
 * The pipelines a run of `stage` needs that the cache lacks: one training step (forward, cross-entropy,
 * backward into the parameters' gradients) at `batch` and an evaluation forward in `evalMode`, both recorded dry on a model built on meta.
 */
export function stepPipelines(
  stage: string,
  opts: ModelOptions = {},
  batch = 64,
  evalMode: "train" | "eval" = "train",
  imageSize = 32,
): PipelineRequest[] {
  const model = onMeta(() => buildModel(stage, opts));
  const x = () => meta([batch, model.config.inChannels, imageSize, imageSize]);
  return collectPipelines(() => {
    // the optimizer gives every parameter a zeroed gradient the backward pass writes into
    for (const p of model.parameters()) {
      p.grad = meta(p.shape);
      p.gradZeroed = true;
    }
    model.train();
    crossEntropy(model.forward(x()), new Int32Array(batch)).backward();
    if (evalMode === "eval") model.eval();
    noGrad(() => model.forward(x()));
  });
}

/** The plan as a table: layer, op, pass, shape, variant, source. */
export function formatPlan(plan: PlanEntry[]): string {
  const head = ["layer", "op", "pass", "shape", "variant", "source"];
  const body = plan.map((p) => [p.layer || "(model)", p.op, p.pass, p.shape, p.variant, p.source]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  return [head, ...body].map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()).join("\n");
}
