// CIFAR-10 input pipeline on the GPU: one kernel turns a batch of raw uint8 images into the network's
// NCHW f32 input, applying the notebook's training transform in one pass:
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
// Upload: the images (count·3072 bytes, 4× fewer than f32) and one packed u32 per image
// (top | left << 8 | flip << 16) go to the GPU in one write, read by the kernel as `array<u32>`.
// Normalisation reads a 768-entry table (channel × byte value) computed on the CPU with the same f32
// arithmetic as `normalizeValue`: WGSL's f32 division is not guaranteed to be correctly rounded, the table
// makes the GPU result exact (and identical to PyTorch's float32 ToTensor + Normalize).

import type { Rng } from "../autograd/random.ts";
import { empty, type Tensor } from "../autograd/tensor.ts";
import {
  acquireBuffer,
  dispatch,
  gpu,
  grid1D,
  linearIndex,
  pipeline,
  releaseBuffer,
  upload,
  WG,
} from "./runtime.ts";

export const CIFAR_MEAN: readonly number[] = [0.4914, 0.4822, 0.4465];
export const CIFAR_STD: readonly number[] = [0.2023, 0.1994, 0.2010];
export const IMAGE_SIZE = 32;
export const IMAGE_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE;
export const PAD = 4;

/** Per-image random choices of a batch. */
export interface AugmentParams {
  /** (top, left) of the 32×32 crop in the zero-padded 40×40 image, each in [0, 2·PAD]; [2·count]. */
  offsets: Uint8Array;
  /** 1 = mirror horizontally (after the crop); [count]. */
  flips: Uint8Array;
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
  const t = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) for (let v = 0; v < 256; v++) t[c * 256 + v] = normalizeValue(c, v);
  return t;
}

function checkArgs(images: Uint8Array, count: number, p: AugmentParams): void {
  if (!Number.isInteger(count) || count < 1) {
    throw new Error(`augment: count must be a positive integer, got ${count}`);
  }
  if (images.length < count * IMAGE_BYTES) {
    throw new Error(`augment: ${images.length} bytes cannot hold ${count} images of ${IMAGE_BYTES} bytes`);
  }
  if (p.offsets.length < 2 * count || p.flips.length < count) {
    throw new Error(`augment: params cover fewer than ${count} images`);
  }
  for (let i = 0; i < 2 * count; i++) {
    if (p.offsets[i] > 2 * PAD) {
      throw new Error(`augment: crop offset ${p.offsets[i]} outside [0, ${2 * PAD}]`);
    }
  }
}

/** CPU reference: crop, flip and normalise `count` planar uint8 images into NCHW f32. */
export function augmentCpu(images: Uint8Array, count: number, p: AugmentParams): Float32Array {
  checkArgs(images, count, p);
  const S = IMAGE_SIZE;
  const out = new Float32Array(count * IMAGE_BYTES);
  for (let b = 0; b < count; b++) {
    const top = p.offsets[2 * b], left = p.offsets[2 * b + 1], flip = p.flips[b] !== 0;
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < S; y++) {
        for (let x = 0; x < S; x++) {
          const sy = y + top - PAD;
          const sx = (flip ? S - 1 - x : x) + left - PAD;
          const v = sy >= 0 && sy < S && sx >= 0 && sx < S
            ? images[b * IMAGE_BYTES + c * S * S + sy * S + sx]
            : 0;
          out[b * IMAGE_BYTES + c * S * S + y * S + x] = normalizeValue(c, v);
        }
      }
    }
  }
  return out;
}

let tableBuffer: GPUBuffer | null = null;
let tableDevice: GPUDevice | null = null;
let staging = new Uint8Array(0);

function table(): GPUBuffer {
  const { device } = gpu();
  if (!tableBuffer || tableDevice !== device) {
    tableBuffer = device.createBuffer({
      label: "cifar normalize table",
      size: 3 * 256 * 4,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    tableDevice = device;
    upload(tableBuffer, normalizeTable());
  }
  return tableBuffer;
}

function kernelSource(count: number, grid: [number, number]): string {
  const n = count * IMAGE_BYTES;
  return `@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read> lut: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = ${linearIndex(grid)};
  if (i >= ${n}u) { return; }
  let b = i / ${IMAGE_BYTES}u;
  let r = i % ${IMAGE_BYTES}u;
  let c = r / ${IMAGE_SIZE * IMAGE_SIZE}u;
  let y = i32((r / ${IMAGE_SIZE}u) % ${IMAGE_SIZE}u);
  let x = i32(r % ${IMAGE_SIZE}u);
  let prm = src[${count * IMAGE_BYTES / 4}u + b];
  let top = i32(prm & 255u);
  let left = i32((prm >> 8u) & 255u);
  var cx = x;
  if (((prm >> 16u) & 1u) == 1u) { cx = ${IMAGE_SIZE - 1} - x; }
  let sy = y + top - ${PAD};
  let sx = cx + left - ${PAD};
  var v = 0u;
  if (sy >= 0 && sy < ${IMAGE_SIZE} && sx >= 0 && sx < ${IMAGE_SIZE}) {
    let k = b * ${IMAGE_BYTES}u + c * ${IMAGE_SIZE * IMAGE_SIZE}u + u32(sy) * ${IMAGE_SIZE}u + u32(sx);
    v = (src[k >> 2u] >> ((k & 3u) * 8u)) & 255u;
  }
  out[i] = lut[c * 256u + v];
}`;
}

/**
 * Uploads `count` planar uint8 images (official layout, no label bytes) with their crop offsets and flip
 * flags, and records the kernel that writes the normalised NCHW f32 batch. Does not wait on the GPU.
 */
export function augmentGpu(images: Uint8Array, count: number, p: AugmentParams): Tensor {
  checkArgs(images, count, p);
  const pixelBytes = count * IMAGE_BYTES; // a multiple of 4
  const total = pixelBytes + 4 * count;
  if (staging.length < total) staging = new Uint8Array(total);
  staging.set(images.subarray(0, pixelBytes), 0);
  const words = new DataView(staging.buffer, pixelBytes, 4 * count);
  for (let b = 0; b < count; b++) {
    words.setUint32(
      4 * b,
      p.offsets[2 * b] | (p.offsets[2 * b + 1] << 8) | ((p.flips[b] ? 1 : 0) << 16),
      true,
    );
  }
  const lut = table();
  const src = acquireBuffer(total);
  upload(src, staging.subarray(0, total));
  const out = empty([count, 3, IMAGE_SIZE, IMAGE_SIZE]);
  const grid = grid1D(pixelBytes, WG);
  dispatch(pipeline("cifar_augment", kernelSource(count, grid)), [
    { buffer: src, offset: 0, size: total },
    lut,
    out.binding(),
  ], grid);
  // Commands already recorded keep reading `src`; a later upload into it is ordered after them.
  releaseBuffer(src);
  return out;
}
