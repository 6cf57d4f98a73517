// Training and evaluation metrics summed on the GPU: loss·batch, correct argmax predictions and images,
// so a training step never waits on a readback. `read()` is the only readback; it records its copy when
// called, so a later `reset()` or step does not change what it returns.

import { keep, type Tensor, zeros } from "../autograd/tensor.ts";
import { accumulateMetrics, METRIC_SLOTS } from "../kernels/metrics.ts";
import { clear, upload } from "../kernels/runtime.ts";

/** Metric sums read back: loss·batch summed over the batches, correct predictions, images. */
export interface MetricSums {
  lossSum: number;
  correct: number;
  count: number;
}

/** Sums of loss·batch, correct predictions and images, kept on the GPU. */
export class GpuMetrics {
  readonly sums = keep(zeros([METRIC_SLOTS]));
  reset(): void {
    const s = this.sums.storage;
    clear(s.buffer, s.offset, METRIC_SLOTS * 4);
  }
  /** Restores sums read back earlier (exact f32 values, so accumulation continues bit for bit). */
  load(m: MetricSums): void {
    const s = this.sums.storage;
    upload(s.buffer, Float32Array.of(m.lossSum, m.correct, m.count, 0), s.offset);
  }
  /** Adds one batch: `out` [batch, classes] logits (or probabilities), `y` [batch] targets, `loss` the
   * batch's mean loss (null: accuracy only). */
  add(out: Tensor, y: Tensor, loss: Tensor | null): void {
    accumulateMetrics(
      out.binding(),
      y.binding(),
      loss ? loss.binding() : null,
      this.sums.binding(),
      out.shape[0],
      out.shape[1],
    );
  }
  async read(): Promise<MetricSums> {
    const [lossSum, correct, count] = await this.sums.toArray();
    return { lossSum, correct, count };
  }
  dispose(): void {
    this.sums.dispose();
  }
}
