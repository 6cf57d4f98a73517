// Evaluation: the accuracy of a model over every batch of a batch source, counted on the GPU with one
// readback at the end. The caller sets the mode first (see `evaluationMode` in recipe.ts). A caller
// that also wants the predictions themselves (the page's per-class counts and sample grid, `deno task
// eval`'s per-class table) passes `onBatch`, which gets each batch's output before the batch is freed.

import { noGrad, scope, type Tensor } from "../autograd/tensor.ts";
import type { Batch } from "../data/loader.ts";
import type { Module } from "../nn/module.ts";
import type { GpuMetrics } from "./metrics.ts";

/** What training and evaluation need of a data loader (CifarLoader is one). */
export interface BatchSource {
  readonly count: number;
  readonly batchesPerEpoch: number;
  epoch(e: number, opts?: { startBatch?: number }): Iterable<Batch>;
}

export interface EvaluateOptions {
  /** The epoch whose batches are drawn (it seeds augmentation where the source augments). Default 0. */
  epoch?: number;
  /**
   * Called with each batch and the model's output for it ([batch, classes]); the output is freed once
   * the returned promise settles (the evaluation waits for it before the next batch).
   */
  onBatch?: (batch: Batch, out: Tensor) => void | Promise<void>;
}

/** The outcome of an evaluation: correct predictions over images (NaN when the source is empty). */
export interface Accuracy {
  accuracy: number;
  correct: number;
  images: number;
}

/** Accuracy of `model` over every batch of `source`, summed into `metrics` (reset first). */
export async function evaluateAccuracy(
  model: Module,
  source: Pick<BatchSource, "epoch">,
  metrics: GpuMetrics,
  opts: EvaluateOptions = {},
): Promise<Accuracy> {
  metrics.reset();
  const hook = opts.onBatch;
  for (const batch of source.epoch(opts.epoch ?? 0)) {
    const out = noGrad(() =>
      scope(() => {
        const o = model.forward(batch.x);
        metrics.add(o, batch.y, null);
        return hook ? o : null;
      })
    );
    try {
      if (out) await hook!(batch, out);
    } finally {
      out?.dispose();
      batch.x.dispose();
      batch.y.dispose();
    }
  }
  const { correct, count } = await metrics.read();
  return { accuracy: count ? correct / count : NaN, correct, images: count };
}

/** Accuracy of `model` over every batch of `loader`, with one readback at the end. */
export async function evaluate(
  model: Module,
  loader: Pick<BatchSource, "epoch">,
  metrics: GpuMetrics,
  epoch = 0,
): Promise<number> {
  return (await evaluateAccuracy(model, loader, metrics, { epoch })).accuracy;
}
