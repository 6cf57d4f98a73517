// Crop, flip and normalise a batch of uint8 images into NCHW f32 in one pass (the GPU input pipeline; the
// CIFAR-10 transform, its constants and the Tensor-level wrapper live in data/augment.ts):
//
//   RandomCrop(size, padding=pad) (zero fill on raw pixels) → RandomHorizontalFlip → lut[channel][byte]
//
// where the lookup table holds the normalised value of every byte per channel (computed on the CPU, so the
// GPU result is exact: WGSL's f32 division is not guaranteed to be correctly rounded).
//
// Contract
//   interface AugmentSpec { count, channels, size, pad }    images of `channels` planes of size × size bytes
//   interface AugmentParams { offsets: [2·count] (top, left) of the crop in the padded image, each in
//                             [0, 2·pad]; flips: [count] of 0/1 }
//   key(spec), source(spec)                   the pipeline key and its WGSL (generated on a cache miss only),
//                                             one for every count (read from the parameters `P`)
//   checkAugment(spec, images, params)        throws a clear error on bad sizes or offsets
//   packAugmentInput(spec, images, params, staging?) → Uint8Array
//       the kernel's input: the pixels, then one u32 per image (top | left << 8 | flip << 16), little endian
//   augment(spec, src, lut, out)              the launcher: src = the packed input, lut = channels × 256 f32,
//                                             out = count × channels × size × size f32
//   augmentReference(spec, images, params, lut) → Float32Array   the CPU reference (equal bit for bit)
//
// There is no backward: the input pipeline is not differentiated.

import { type Binding, dispatch, FLAT_ARGS, flatIndex, grid1D, kernel, params, WG } from "./runtime.ts";
import { divU, modU, paramsDecl } from "./wgsl.ts";

export interface AugmentSpec {
  count: number;
  channels: number;
  /** Side of the square images (input and output). */
  size: number;
  /** Zero padding of the crop on each side. */
  pad: number;
}

/** Per-image random choices of a batch. */
export interface AugmentParams {
  /** (top, left) of the crop in the zero-padded image, each in [0, 2·pad]; [2·count]. */
  offsets: Uint8Array;
  /** 1 = mirror horizontally (after the crop); [count]. */
  flips: Uint8Array;
}

const imageBytes = (s: Omit<AugmentSpec, "count">) => s.channels * s.size * s.size;

export function checkAugment(spec: AugmentSpec, images: Uint8Array, p: AugmentParams): void {
  const { count, pad } = spec;
  if (!Number.isInteger(count) || count < 1) {
    throw new Error(`augment: count must be a positive integer, got ${count}`);
  }
  if (images.length < count * imageBytes(spec)) {
    throw new Error(
      `augment: ${images.length} bytes cannot hold ${count} images of ${imageBytes(spec)} bytes`,
    );
  }
  if (p.offsets.length < 2 * count || p.flips.length < count) {
    throw new Error(`augment: params cover fewer than ${count} images`);
  }
  for (let i = 0; i < 2 * count; i++) {
    if (p.offsets[i] > 2 * pad) {
      throw new Error(`augment: crop offset ${p.offsets[i]} outside [0, ${2 * pad}]`);
    }
  }
}

/** CPU reference: crop, flip and look up `count` planar uint8 images into NCHW f32. */
export function augmentReference(
  spec: AugmentSpec,
  images: Uint8Array,
  p: AugmentParams,
  lut: Float32Array,
): Float32Array {
  checkAugment(spec, images, p);
  const { count, channels, size: S, pad } = spec;
  const ib = imageBytes(spec);
  const out = new Float32Array(count * ib);
  for (let b = 0; b < count; b++) {
    const top = p.offsets[2 * b], left = p.offsets[2 * b + 1], flip = p.flips[b] !== 0;
    for (let c = 0; c < channels; c++) {
      for (let y = 0; y < S; y++) {
        for (let x = 0; x < S; x++) {
          const sy = y + top - pad;
          const sx = (flip ? S - 1 - x : x) + left - pad;
          const v = sy >= 0 && sy < S && sx >= 0 && sx < S ? images[b * ib + c * S * S + sy * S + sx] : 0;
          out[b * ib + c * S * S + y * S + x] = lut[c * 256 + v];
        }
      }
    }
  }
  return out;
}

/**
 * The kernel's input bytes (pixels, then one packed u32 per image), written into `staging` when it is
 * large enough (returned as a view of it) or into a new array.
 */
export function packAugmentInput(
  spec: AugmentSpec,
  images: Uint8Array,
  p: AugmentParams,
  staging?: Uint8Array,
): Uint8Array {
  checkAugment(spec, images, p);
  const { count } = spec;
  const pixelBytes = count * imageBytes(spec);
  if (pixelBytes % 4 !== 0) throw new Error(`augment: ${pixelBytes} pixel bytes is not a multiple of 4`);
  const total = pixelBytes + 4 * count;
  const buf = staging && staging.length >= total ? staging.subarray(0, total) : new Uint8Array(total);
  buf.set(images.subarray(0, pixelBytes), 0);
  const words = new DataView(buf.buffer, buf.byteOffset + pixelBytes, 4 * count);
  for (let b = 0; b < count; b++) {
    words.setUint32(
      4 * b,
      p.offsets[2 * b] | (p.offsets[2 * b + 1] << 8) | ((p.flips[b] ? 1 : 0) << 16),
      true,
    );
  }
  return buf;
}

/** What the WGSL depends on: the image's sizes (the count is read from `P`). */
type ImageSpec = Omit<AugmentSpec, "count">;

export function key(s: ImageSpec): string {
  return `augment:${s.channels}:${s.size}:${s.pad}`;
}

/** The run-time parameters: the output's elements (count · image bytes) and the pixels' u32 words. */
const AUGMENT_PARAMS = ["total", "words"];

export function source(spec: ImageSpec): string {
  const { size: S, pad } = spec;
  const ib = imageBytes(spec);
  return `@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read> lut: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
${paramsDecl(3, AUGMENT_PARAMS)}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let i = ${flatIndex()};
  if (i >= P.total) { return; }
  let b = ${divU("i", ib)};
  let r = ${modU("i", ib)};
  let c = ${divU("r", S * S)};
  let y = i32(${modU(divU("r", S), S)});
  let x = i32(${modU("r", S)});
  let prm = src[P.words + b];
  let top = i32(prm & 255u);
  let left = i32((prm >> 8u) & 255u);
  var cx = x;
  if (((prm >> 16u) & 1u) == 1u) { cx = ${S - 1} - x; }
  let sy = y + top - ${pad};
  let sx = cx + left - ${pad};
  var v = 0u;
  if (sy >= 0 && sy < ${S} && sx >= 0 && sx < ${S}) {
    let k = b * ${ib}u + c * ${S * S}u + u32(sy) * ${S}u + u32(sx);
    v = (src[k >> 2u] >> ((k & 3u) * 8u)) & 255u;
  }
  out[i] = lut[c * 256u + v];
}`;
}

/** Records the kernel: `src` holds `packAugmentInput`'s bytes, `lut` the per-channel table. */
export function augment(spec: AugmentSpec, src: Binding, lut: Binding, out: Binding): void {
  const total = spec.count * imageBytes(spec);
  const image: ImageSpec = { channels: spec.channels, size: spec.size, pad: spec.pad };
  dispatch(
    kernel(key(image), "augment", () => source(image)),
    [src, lut, out, params(total, total / 4)],
    grid1D(total, WG),
  );
}
