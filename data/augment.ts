// The notebook's CIFAR-10 transforms on the GPU: one kernel (kernels/augment.ts) turns a batch of raw uint8
// images into the network's NCHW f32 input in one pass:
//
//   RandomCrop(32, padding=4) (zero fill on raw pixels) → RandomHorizontalFlip → ToTensor (÷255) →
//   Normalize(mean [0.4914, 0.4822, 0.4465], std [0.2023, 0.1994, 0.2010])
//
// The random choices (crop offsets and flip flags, one set per image) are drawn on the CPU from the
// seeded `Rng`, so a batch is fully determined by its images and `AugmentParams`; `augmentCpu` is the
// reference of the same function and the GPU result equals it bit for bit.
//
// API
//   CIFAR_MEAN, CIFAR_STD           the notebook's Normalize constants
//   IMAGE_BYTES (3072), PAD (4)     bytes per image (official planar layout R[1024] G[1024] B[1024]); padding
//   interface AugmentParams         { offsets: Uint8Array [2·count] = (top, left) of the crop in the padded
//                                     40×40 image, each in [0, 8]; flips: Uint8Array [count] of 0/1 }
//   drawAugmentParams(rng, count)   per image: top = rng.int(9), left = rng.int(9), flip = rng.uniform() < 0.5
//   identityParams(count)           offsets (4, 4), no flip: plain ToTensor + Normalize (evaluation)
//   normalizeValue(channel, byte)   (byte/255 − mean)/std in f32, exactly as PyTorch computes it
//   normalizeTable()                the 3 × 256 table of normalizeValue the kernel reads
//   augmentCpu(images, count, p)    the reference → Float32Array [count, 3, 32, 32]
//   augmentGpu(images, count, p)    the kernel → Tensor [count, 3, 32, 32] (caller disposes)
//
// Upload: the images (count·3072 bytes, 4× fewer than f32) and one packed u32 per image go to the GPU in
// one write. Normalisation reads a 768-entry table (channel × byte value) computed on the CPU with the
// same f32 arithmetic as `normalizeValue`, which makes the GPU result identical to PyTorch's float32
// ToTensor + Normalize.

import type { Rng } from "../autograd/random.ts";
import { empty, type Tensor } from "../autograd/tensor.ts";
import {
  augment,
  type AugmentParams,
  augmentReference,
  type AugmentSpec,
  packAugmentInput,
} from "../kernels/augment.ts";
import { acquireBuffer, gpu, releaseBuffer, upload } from "../kernels/runtime.ts";
import { CHANNELS, IMAGE_BYTES, IMAGE_SIZE } from "./cifar10_spec.ts";

export type { AugmentParams };
export { IMAGE_BYTES, IMAGE_SIZE };

export const CIFAR_MEAN: readonly number[] = [0.4914, 0.4822, 0.4465];
export const CIFAR_STD: readonly number[] = [0.2023, 0.1994, 0.2010];
export const PAD = 4;

/** The kernel's sizes for `count` CIFAR images. */
function spec(count: number): AugmentSpec {
  return { count, channels: CHANNELS, size: IMAGE_SIZE, pad: PAD };
}

/** Draws RandomCrop offsets and flip flags for `count` images, in image order. */
export function drawAugmentParams(rng: Rng, count: number): AugmentParams {
  const offsets = new Uint8Array(2 * count);
  const flips = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    offsets[2 * i] = rng.int(2 * PAD + 1);
    offsets[2 * i + 1] = rng.int(2 * PAD + 1);
    flips[i] = rng.uniform() < 0.5 ? 1 : 0;
  }
  return { offsets, flips };
}

/** No crop shift and no flip: the evaluation transform (ToTensor + Normalize). */
export function identityParams(count: number): AugmentParams {
  return { offsets: new Uint8Array(2 * count).fill(PAD), flips: new Uint8Array(count) };
}

const MEAN32 = CIFAR_MEAN.map(Math.fround);
const STD32 = CIFAR_STD.map(Math.fround);

/** (byte / 255 − mean[c]) / std[c], every step rounded to f32 (PyTorch's float32 arithmetic). */
export function normalizeValue(channel: number, byte: number): number {
  const x = Math.fround(byte / 255);
  return Math.fround(Math.fround(x - MEAN32[channel]) / STD32[channel]);
}

/** The 3 × 256 table of `normalizeValue`. */
export function normalizeTable(): Float32Array {
  const t = new Float32Array(CHANNELS * 256);
  for (let c = 0; c < CHANNELS; c++) for (let v = 0; v < 256; v++) t[c * 256 + v] = normalizeValue(c, v);
  return t;
}

/** CPU reference: crop, flip and normalise `count` planar uint8 images into NCHW f32. */
export function augmentCpu(images: Uint8Array, count: number, p: AugmentParams): Float32Array {
  return augmentReference(spec(count), images, p, normalizeTable());
}

let tableBuffer: GPUBuffer | null = null;
let tableDevice: GPUDevice | null = null;
let staging = new Uint8Array(0);

/** The normalisation table on the GPU, uploaded once per device. */
function table(): GPUBuffer {
  const { device } = gpu();
  if (!tableBuffer || tableDevice !== device) {
    tableBuffer = device.createBuffer({
      label: "cifar normalize table",
      size: CHANNELS * 256 * 4,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    tableDevice = device;
    upload(tableBuffer, normalizeTable());
  }
  return tableBuffer;
}

/**
 * Uploads `count` planar uint8 images (official layout, no label bytes) with their crop offsets and flip
 * flags, and records the kernel that writes the normalised NCHW f32 batch. Does not wait on the GPU.
 */
export function augmentGpu(images: Uint8Array, count: number, p: AugmentParams): Tensor {
  const s = spec(count);
  const total = count * IMAGE_BYTES + 4 * count;
  if (staging.length < total) staging = new Uint8Array(total);
  const input = packAugmentInput(s, images, p, staging);
  const lut = table();
  const src = acquireBuffer(total);
  upload(src, input);
  const out = empty([count, CHANNELS, IMAGE_SIZE, IMAGE_SIZE]);
  augment(s, { buffer: src, offset: 0, size: total }, lut, out.binding());
  // Commands already recorded keep reading `src`; a later upload into it is ordered after them.
  releaseBuffer(src);
  return out;
}
