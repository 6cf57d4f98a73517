// GEMM operands read from textures: a buffer is copied (copyBufferToTexture, a memcpy) into a cached
// rgba32float texture, TW texels per row, and kernels fetch vec4 i as texel (i mod TW, i / TW). On
// lavapipe a texel fetch is a vectorised gather while a storage load whose address is not a constant
// is a per-lane loop, so a GEMM that fetches its operands runs faster even after the copies
// (kernels/conv1x1.ts, gemm1x1/vec4-texture). Used there and by kernels/matmul.ts (v3).

import {
  type Binding,
  copyToTextureCommand,
  gpu,
  isDryRun,
  type Resource,
  resourcesChanged,
} from "./runtime.ts";
import { adapterProfile } from "./profile.ts";

/** Texels per row of the operand textures (a power of two; 32 KiB rows). */
const TW = 2048;
const TW_LOG2 = 11;
const textures = new Map<string, GPUTexture>();

/** Whether an operand of `floats` floats (a multiple of 4) fits an operand texture of this device. */
export function fitsOperandTexture(floats: number): boolean {
  return Math.ceil(floats / 4 / TW) <= gpu().limits.maxTextureDimension2D;
}

/**
 * A cached rgba32float texture of at least `texels` texels for operand slot `role`. Calls recorded in
 * order may reuse one texture: each copy lands before the dispatch that reads it.
 */
export function operandTexture(role: string, texels: number): GPUTexture {
  const rows = Math.max(1, Math.ceil(texels / TW));
  const { device, limits } = gpu();
  if (rows > limits.maxTextureDimension2D) {
    throw new Error(`an operand of ${texels * 4} floats exceeds the texture limit of this adapter`);
  }
  // the smallest cached texture of this role that is tall enough serves. Heights are powers of two:
  // llvmpipe compiles a variant of a shader per bound texture's static state, power-of-two sizes
  // included, so mixed heights recompiled the 32×32 GEMMs (seconds each) as operands moved between
  // textures from one training step to the next
  let best: GPUTexture | null = null;
  for (const [key, t] of textures) {
    if (key.startsWith(`${role}:`) && t.height >= rows && (!best || t.height < best.height)) best = t;
  }
  if (best) return best;
  const h = Math.min(limits.maxTextureDimension2D, 2 ** Math.ceil(Math.log2(rows)));
  const t = device.createTexture({
    label: `GEMM operand ${role}`,
    size: [TW, h],
    format: "rgba32float",
    // both bindings, so one texture serves either read mode (storageTextureReads)
    usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST,
  });
  textures.set(`${role}:${h}`, t);
  return t;
}

const views = new WeakMap<GPUTexture, GPUTextureView>();
/** One view per operand texture (a new view per dispatch would defeat the bind-group cache). */
export function viewOf(t: GPUTexture): GPUTextureView {
  let v = views.get(t);
  if (!v) views.set(t, v = t.createView());
  return v;
}

/** Bytes held by the operand textures (not counted by the buffer pool). */
export function operandTextureBytes(): number {
  let b = 0;
  for (const t of textures.values()) b += t.width * t.height * 16;
  return b;
}

/** Destroys the cached operand textures. */
export function trimOperandTextures(): void {
  for (const t of textures.values()) t.destroy();
  textures.clear();
  resourcesChanged();
}

/** Records copies of `texels` vec4s of `src` (16-byte aligned) into `tex`, TW texels per row. */
export function copyToTexture(src: Binding, tex: GPUTexture, texels: number): void {
  if (isDryRun()) return;
  const b = src instanceof GPUBuffer
    ? { buffer: src, offset: 0 }
    : { buffer: src.buffer, offset: src.offset ?? 0 };
  const full = Math.floor(texels / TW), rem = texels % TW;
  if (full > 0) {
    copyToTextureCommand(
      { buffer: b.buffer, offset: b.offset, bytesPerRow: TW * 16, rowsPerImage: full },
      { texture: tex },
      [TW, full, 1],
    );
  }
  if (rem > 0) {
    copyToTextureCommand(
      { buffer: b.buffer, offset: b.offset + full * TW * 16 },
      { texture: tex, origin: [0, full, 0] },
      [rem, 1, 1],
    );
  }
}

/** The operand texture holding `src` for slot `role` (`floats` floats, a multiple of 4), copied. */
export function textureOperand(role: string, src: Binding, floats: number): GPUTextureView {
  const tex = operandTexture(role, floats / 4);
  copyToTexture(src, tex, floats / 4);
  return viewOf(tex);
}

/** What a kernel binds for operand `src` of `floats` floats: the buffer, or a texture holding it (slot `role`). */
export function operandResource(role: string, src: Binding, floats: number, tex: boolean): Resource {
  return tex ? textureOperand(role, src, floats) : src;
}

/**
 * Whether kernels read operand textures as read-only storage textures (where the profile asks for it
 * and WGSL has the language feature) rather than as sampled textures: a read-only storage texel fetch
 * has no level or sampler state to resolve.
 */
export function storageTextureReads(): boolean {
  return adapterProfile().storageTextureReads && hasStorageTextureReads();
}

let readOnlyStorageTextures: boolean | null = null;
/** Whether this WGSL has read-only storage textures (looked up once: pipeline keys ask on every dispatch). */
function hasStorageTextureReads(): boolean {
  if (readOnlyStorageTextures === null) {
    const features = (navigator.gpu as { wgslLanguageFeatures?: ReadonlySet<string> }).wgslLanguageFeatures;
    readOnlyStorageTextures = !!features?.has("readonly_and_readwrite_storage_textures");
  }
  return readOnlyStorageTextures;
}

/** WGSL declaring operand texture `name` at `binding`, in the read mode of storageTextureReads. */
export function textureDecl(name: string, binding: number): string {
  const type = storageTextureReads() ? "texture_storage_2d<rgba32float, read>" : "texture_2d<f32>";
  return `@group(0) @binding(${binding}) var ${name}: ${type};`;
}

/** WGSL fetching the texel at `coord` (a vec2<u32>) of operand texture `name`. */
export function texelLoad(name: string, coord: string): string {
  return storageTextureReads() ? `textureLoad(${name}, ${coord})` : `textureLoad(${name}, ${coord}, 0)`;
}

/** A part for the pipeline keys of kernels that read operand textures (the read mode changes their WGSL). */
export function textureReadTag(): string {
  return storageTextureReads() ? "st" : "tx";
}

/** WGSL `tc(i)`: the texel coordinates of vec4 i of an operand texture. */
export const WGSL_TEXEL_COORD = `fn tc(t: u32) -> vec2<u32> { return vec2<u32>(t & ${
  TW - 1
}u, t >> ${TW_LOG2}u); }`;
