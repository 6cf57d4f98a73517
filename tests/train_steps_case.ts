// A few training steps of the narrow `final` model from seeded weights on a seeded batch: the same
// computation in Deno (wgpu) and in the page (Dawn), so the browser test can hold the two WebGPU
// implementations to the same losses. No Deno API.

import { Rng } from "../autograd/random.ts";
import { keep, scope, type Tensor } from "../autograd/tensor.ts";
import { crossEntropy } from "../autograd/ops/loss.ts";
import { AdamW } from "../nn/optim.ts";
import { CifarLoader } from "../data/loader.ts";
import { IMAGE_BYTES } from "../data/cifar10_spec.ts";
import { buildModel } from "../models/zoo.ts";
import { NARROW } from "../models/stages.ts";

export interface TrainStepsOptions {
  steps?: number;
  batchSize?: number;
  seed?: number;
}

/** Losses of `steps` AdamW steps (the trainer's recipe) on augmented batches of seeded random images. */
export async function trainStepsLosses(opts: TrainStepsOptions = {}): Promise<number[]> {
  const { steps = 3, batchSize = 16, seed = 7 } = opts;
  const rng = new Rng(seed);
  const count = steps * batchSize;
  const images = new Uint8Array(count * IMAGE_BYTES);
  for (let i = 0; i < images.length; i++) images[i] = rng.nextU32() & 255;
  const labels = Uint8Array.from({ length: count }, () => rng.int(10));
  const loader = new CifarLoader({ name: "train", images, labels, count }, {
    batchSize,
    seed,
    shuffle: true,
    augment: true,
  });
  const model = buildModel("final", { ...NARROW, seed });
  const opt = new AdamW(model.parameters(), { lr: 0.004, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.05 });
  const losses: Tensor[] = [];
  try {
    model.train();
    for (const batch of loader.epoch(0)) {
      losses.push(scope(() => {
        const loss = crossEntropy(model.forward(batch.x), batch.y);
        opt.zeroGrad();
        loss.backward();
        opt.step();
        return keep(loss);
      }));
      batch.x.dispose();
      batch.y.dispose();
    }
    const out: number[] = [];
    for (const l of losses) out.push(await l.item());
    return out;
  } finally {
    losses.forEach((l) => l.dispose());
    opt.dispose();
    model.dispose();
  }
}
