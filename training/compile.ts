// Compiling a run's kernels before its first step: a dry run of one training step and one evaluation
// forward of the run's model (built on meta) lists every pipeline they record, and all of them are
// compiled together (createComputePipelineAsync) behind a progress callback, instead of one at a time
// inside the first step, where the first step would sit silent for the whole compile.

import { empty } from "../autograd/tensor.ts";
import { accumulateMetrics } from "../kernels/metrics.ts";
import { collectPipelines, compilePipelines } from "../kernels/runtime.ts";
import { stepPipelines } from "../models/plan.ts";
import { runModelOptions, type RunSettings } from "./recipe.ts";

/** CIFAR-10's classes: the width of the logits the metrics read. */
const CLASSES = 10;

/**
 * Compiles the kernels of a training step of `settings` at its batch size and of its evaluation forward;
 * returns how many were compiled (0 when every one was cached).
 */
export async function compileRunKernels(
  settings: RunSettings & { batchSize: number },
  seed: number,
  progress?: (done: number, total: number) => void,
): Promise<number> {
  const evalMode = settings.protocol === "clean" ? "eval" : "train";
  const requests = stepPipelines(
    settings.stage,
    runModelOptions(settings, seed),
    settings.batchSize,
    evalMode,
  );
  // the metric sums of training (with the loss) and of evaluation
  const metrics = collectPipelines(() => {
    const t = empty([1]).binding();
    for (const loss of [t, null]) accumulateMetrics(t, t, loss, t, settings.batchSize, CLASSES);
  });
  const all = [...requests, ...metrics.filter((m) => !requests.some((r) => r.key === m.key))];
  await compilePipelines(all, progress);
  return all.length;
}
