// The notebook's split of CIFAR-10 and a batch iterator that builds each batch's input on the GPU.
//
// API
//   makeSplits(data, {trainLimit?, evalLimit?, validationLimit?, testLimit?}) → { train, validation, test }
//       validation = training images [0, 5000), train = [5000, 50000), test = the test set (views, no copy);
//       a limit keeps the first N images of a split (`evalLimit` limits validation and test alike).
//   new CifarLoader(split, {batchSize = 64, shuffle = false, augment = false, seed = 0, dropLast = false,
//                           prefetch = true})
//       .batchesPerEpoch, .count
//       .epoch(e, {startBatch?}) → Generator<Batch>: `for (const batch of loader.epoch(e))`
//       .order(e) → Uint32Array       the image order of epoch e
//       .hostBatch(e, b)              the batch's bytes, labels and augmentation params, on the CPU
//   makeLoaders(data, {batchSize?, seed?, trainLimit?, evalLimit?, validationAugment = false})
//       → { train, validation, test }: train shuffled and augmented; test plain; validation plain unless
//       `validationAugment` (then shuffled and augmented like the notebook, see below).
//
// A Batch is { x: Tensor [B, 3, 32, 32] (normalised, augmented when asked), y: Tensor [B] (class indices
// as f32, what crossEntropy takes), labels: Uint8Array [B], size: B, index: the batch number }. x and y
// belong to the caller, outside any scope(): dispose them after the step.
//
// Reproducibility: epoch e's order comes from Rng(hash(seed, split, e)) and batch b's crop offsets and
// flips from Rng(hash(seed, split, e, b)), so any epoch, or any batch of it (`startBatch`), is rebuilt
// exactly from the seed alone: resuming training needs no saved loader state.
//
// Overlap: with `prefetch`, batch b + 1 is uploaded and its augmentation kernel recorded before batch b is
// handed out, so the next input is ready on the GPU as soon as the current step's commands are done; nothing
// in the loader waits on the GPU.
//
// Validation augmentation: the notebook builds its validation set with the training transform (random crop
// and flip), so its validation accuracy is measured on randomly perturbed images and changes from run to
// run for the same weights. The default here is the test transform (deterministic, comparable across epochs
// and runs); `validationAugment: true` reproduces the notebook.

import { Rng } from "../autograd/random.ts";
import { keep, type Tensor, tensor } from "../autograd/tensor.ts";
import { augmentGpu, type AugmentParams, drawAugmentParams, identityParams, IMAGE_BYTES } from "./augment.ts";
import type { CifarSet } from "./cifar10_spec.ts";

export const VALIDATION_SIZE = 5000;

export type SplitName = "train" | "validation" | "test";

export interface CifarSplit extends CifarSet {
  name: SplitName;
}

export interface SplitOptions {
  /** Keep the first N training images (--train-limit). */
  trainLimit?: number;
  /** Keep the first N images of validation and of test. */
  evalLimit?: number;
  validationLimit?: number;
  testLimit?: number;
}

function limited(name: SplitName, set: CifarSet, from: number, to: number, limit?: number): CifarSplit {
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1)) {
    throw new Error(`The ${name} limit must be a positive integer, got ${limit}`);
  }
  const end = limit === undefined ? to : Math.min(to, from + limit);
  return {
    name,
    images: set.images.subarray(from * IMAGE_BYTES, end * IMAGE_BYTES),
    labels: set.labels.subarray(from, end),
    count: end - from,
  };
}

/** The notebook's split: validation [0, 5000) and train [5000, 50000) of the training set; test. */
export function makeSplits(
  data: { train: CifarSet; test: CifarSet },
  opts: SplitOptions = {},
): { train: CifarSplit; validation: CifarSplit; test: CifarSplit } {
  const n = data.train.count;
  if (n <= VALIDATION_SIZE) {
    throw new Error(`The training set has ${n} images; the split needs more than ${VALIDATION_SIZE}`);
  }
  return {
    train: limited("train", data.train, VALIDATION_SIZE, n, opts.trainLimit),
    validation: limited("validation", data.train, 0, VALIDATION_SIZE, opts.validationLimit ?? opts.evalLimit),
    test: limited("test", data.test, 0, data.test.count, opts.testLimit ?? opts.evalLimit),
  };
}

export interface LoaderOptions {
  batchSize?: number;
  /** Reshuffle the order every epoch (from the seed). */
  shuffle?: boolean;
  /** RandomCrop(32, padding 4) + horizontal flip (from the seed); otherwise only ToTensor + Normalize. */
  augment?: boolean;
  seed?: number;
  /** Drop a last incomplete batch (the notebook keeps it). */
  dropLast?: boolean;
  /** Build batch b + 1 on the GPU before handing out batch b (default true). */
  prefetch?: boolean;
}

export interface Batch {
  /** [B, 3, 32, 32] f32, normalised. */
  x: Tensor;
  /** [B] class indices as f32. */
  y: Tensor;
  labels: Uint8Array;
  size: number;
  /** Batch number within the epoch. */
  index: number;
}

export interface HostBatch {
  images: Uint8Array;
  labels: Uint8Array;
  params: AugmentParams;
  size: number;
}

const SPLIT_ID: Record<SplitName, number> = { train: 1, validation: 2, test: 3 };
const SHUFFLE = 0xffffffff;

/** A 32-bit hash of a list of integers (splitmix-style mixing), used as an Rng seed. */
export function mixSeed(...xs: number[]): number {
  let h = 0x2545f491;
  for (const x of xs) {
    h = (h ^ (x >>> 0)) >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
    h = (h ^ (h >>> 16)) >>> 0;
    h = (h + 0x9e3779b9) >>> 0;
  }
  return h;
}

export class CifarLoader {
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly augment: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  readonly prefetch: boolean;

  constructor(readonly split: CifarSplit, opts: LoaderOptions = {}) {
    this.batchSize = opts.batchSize ?? 64;
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) {
      throw new Error(`batchSize must be a positive integer, got ${opts.batchSize}`);
    }
    this.shuffle = opts.shuffle ?? false;
    this.augment = opts.augment ?? false;
    this.seed = opts.seed ?? 0;
    this.dropLast = opts.dropLast ?? false;
    this.prefetch = opts.prefetch ?? true;
  }

  get count(): number {
    return this.split.count;
  }

  get batchesPerEpoch(): number {
    return this.dropLast ? Math.floor(this.count / this.batchSize) : Math.ceil(this.count / this.batchSize);
  }

  /** Image indices (within the split) in the order of epoch `epoch`. */
  order(epoch: number): Uint32Array {
    const idx = new Uint32Array(this.count);
    for (let i = 0; i < idx.length; i++) idx[i] = i;
    if (this.shuffle) new Rng(mixSeed(this.seed, SPLIT_ID[this.split.name], epoch, SHUFFLE)).shuffle(idx);
    return idx;
  }

  /** The CPU side of batch `b` of epoch `epoch` (pass `order` to avoid recomputing it). */
  hostBatch(epoch: number, b: number, order?: Uint32Array): HostBatch {
    const ord = order ?? this.order(epoch);
    if (!(b >= 0 && b < this.batchesPerEpoch)) {
      throw new Error(`batch ${b} out of range: an epoch has ${this.batchesPerEpoch} batches`);
    }
    const start = b * this.batchSize;
    const size = Math.min(this.batchSize, this.count - start);
    const images = new Uint8Array(size * IMAGE_BYTES);
    const labels = new Uint8Array(size);
    const src = this.split.images;
    for (let k = 0; k < size; k++) {
      const i = ord[start + k];
      images.set(src.subarray(i * IMAGE_BYTES, (i + 1) * IMAGE_BYTES), k * IMAGE_BYTES);
      labels[k] = this.split.labels[i];
    }
    const params = this.augment
      ? drawAugmentParams(new Rng(mixSeed(this.seed, SPLIT_ID[this.split.name], epoch, b)), size)
      : identityParams(size);
    return { images, labels, params, size };
  }

  private build(epoch: number, b: number, order: Uint32Array): Batch {
    const h = this.hostBatch(epoch, b, order);
    const x = keep(augmentGpu(h.images, h.size, h.params));
    const y = keep(tensor(Float32Array.from(h.labels), [h.size]));
    return { x, y, labels: h.labels, size: h.size, index: b };
  }

  /** The batches of epoch `epoch` (from `startBatch` when resuming mid-epoch). */
  *epoch(epoch: number, opts: { startBatch?: number } = {}): Generator<Batch, void, undefined> {
    const n = this.batchesPerEpoch;
    const first = opts.startBatch ?? 0;
    if (first >= n) return;
    const order = this.order(epoch);
    let next: Batch | null = this.build(epoch, first, order);
    try {
      for (let b = first; b < n; b++) {
        const cur: Batch = next ?? this.build(epoch, b, order);
        // with prefetch, batch b + 1 is on its way to the GPU before batch b is handed out
        next = this.prefetch && b + 1 < n ? this.build(epoch, b + 1, order) : null;
        yield cur;
      }
    } finally {
      if (next) {
        next.x.dispose();
        next.y.dispose();
      }
    }
  }
}

export interface LoadersOptions extends SplitOptions {
  batchSize?: number;
  /** Batch size of validation and test (default: batchSize). */
  evalBatchSize?: number;
  seed?: number;
  /** Augment (and shuffle) validation like the notebook does (default false: the test transform). */
  validationAugment?: boolean;
}

/** The three loaders of the notebook's recipe. */
export function makeLoaders(
  data: { train: CifarSet; test: CifarSet },
  opts: LoadersOptions = {},
): { train: CifarLoader; validation: CifarLoader; test: CifarLoader } {
  const s = makeSplits(data, opts);
  const batchSize = opts.batchSize ?? 64;
  const evalBatchSize = opts.evalBatchSize ?? batchSize;
  const seed = opts.seed ?? 0;
  const va = opts.validationAugment ?? false;
  return {
    train: new CifarLoader(s.train, { batchSize, seed, shuffle: true, augment: true }),
    validation: new CifarLoader(s.validation, { batchSize: evalBatchSize, seed, shuffle: va, augment: va }),
    test: new CifarLoader(s.test, { batchSize: evalBatchSize, seed }),
  };
}
