// One training step, the recipe's: forward, cross-entropy, zeroGrad, backward, the AdamW step and (when
// given) the metric sums, all recorded into the current command encoder. Nothing is submitted and nothing
// is waited for: the caller decides when to sync or read back. Every training loop of the project (the
// trainer, the page, the step benchmark, the step check both engines run) records its steps here.

import { crossEntropy } from "../autograd/ops/loss.ts";
import { keep, scope, type Tensor } from "../autograd/tensor.ts";
import type { AdamW } from "../nn/optim.ts";
import type { Module } from "../nn/module.ts";
import { sync } from "../kernels/runtime.ts";
import type { GpuMetrics } from "./metrics.ts";

/** What a step updates: the model (in training mode), its optimizer, and optionally the metric sums. */
export interface StepParts {
  model: Module;
  optimizer: AdamW;
  metrics?: GpuMetrics | null;
}

/** A batch: `x` [B, 3, H, W] images, `y` [B] class indices as f32. */
export interface StepBatch {
  x: Tensor;
  y: Tensor;
}

/** Records the step and returns its loss tensor, created in the caller's scope. */
function record(p: StepParts, b: StepBatch): Tensor {
  const out = p.model.forward(b.x);
  const loss = crossEntropy(out, b.y);
  p.optimizer.zeroGrad();
  loss.backward();
  p.optimizer.step();
  p.metrics?.add(out, b.y, loss);
  return loss;
}

/** Records one training step; every tensor it creates is freed (the metric sums hold its results). */
export function trainStep(p: StepParts, b: StepBatch): void {
  scope(() => {
    record(p, b);
  });
}

/** Records one training step and returns its loss (kept: the caller reads it and disposes it). */
export function trainStepLoss(p: StepParts, b: StepBatch): Tensor {
  return scope(() => keep(record(p, b)));
}

/** Keeps at most one step queued behind the one running, so the host never runs far ahead of the GPU. */
export class StepPacer {
  private inFlight: Promise<void> | null = null;

  /** Call after recording each step: waits for the step before it. */
  async stepped(): Promise<void> {
    const done = sync();
    done.catch(() => {}); // awaited on the next call; if the wait before it throws, it must not go unhandled
    if (this.inFlight) await this.inFlight;
    this.inFlight = done;
  }

  /** Waits for the last step recorded. */
  async drain(): Promise<void> {
    const last = this.inFlight;
    this.inFlight = null;
    if (last) await last;
  }
}
