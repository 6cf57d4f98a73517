// A few training steps of the narrow `final` model from seeded weights on a seeded batch: the same
// computation in Deno (wgpu) and in the page (Dawn), so the browser test can hold the two WebGPU
// implementations to the same losses, each step the trainer's (training/step.ts). No Deno API.

import { Rng } from "../autograd/random.ts";
import type { Tensor } from "../autograd/tensor.ts";
import { CifarLoader } from "../data/loader.ts";
import { IMAGE_BYTES } from "../data/cifar10_spec.ts";
import { NARROW } from "../models/stages.ts";
import { buildRunModel, makeOptimizer, type RunSettings } from "../training/recipe.ts";
import { trainStepLoss } from "../training/step.ts";

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
  const settings: RunSettings = {
    stage: "final",
    ...NARROW,
    epochs: 1,
    lr: 0.004,
    weightDecay: 0.05,
    protocol: "notebook",
  };
  const model = buildRunModel(settings, seed);
  const { optimizer: opt } = makeOptimizer(model, settings);
  const losses: Tensor[] = [];
  try {
    model.train();
    for (const batch of loader.epoch(0)) {
      losses.push(trainStepLoss({ model, optimizer: opt }, batch));
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
