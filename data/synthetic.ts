// CIFAR-shaped random data for machines without CIFAR-10 (a GPU machine with no network): images of
// uniform random bytes and labels uniform over the ten classes, both drawn from a seed, in the official
// layout and split sizes, so every code path a real run takes (loader, augmentation, training,
// evaluation, checkpoints) runs unchanged. Accuracies on it mean nothing (chance is 10 %).

import { Rng } from "../autograd/random.ts";
import { type Cifar10Data, type CifarSet, PIXEL_BYTES } from "./cifar10_spec.ts";

/** The source name a run reports for this data (run<k>.json, the log). */
export const SYNTHETIC_SOURCE = "synthetic";

function randomSet(rng: Rng, count: number): CifarSet {
  const images = new Uint8Array(count * PIXEL_BYTES);
  const words = new Uint32Array(images.buffer);
  for (let i = 0; i < words.length; i++) words[i] = rng.nextU32();
  const labels = Uint8Array.from({ length: count }, () => rng.int(10));
  return { images, labels, count };
}

/**
 * Random CIFAR-10 from `seed`: `train` training images (default 50,000, the official count) and `test`
 * test images (default 10,000). The same seed gives the same bytes.
 */
export function syntheticCifar10(seed: number, train = 50000, test = 10000): Cifar10Data {
  const rng = new Rng(seed);
  return {
    train: randomSet(rng, train),
    test: randomSet(rng, test),
    dir: `(${SYNTHETIC_SOURCE}, seed ${seed})`,
  };
}
