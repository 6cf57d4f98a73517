// The adapter profile: every choice of the kernel layer that depends on the adapter lives here (register
// block sizes, workgroup sizes, size thresholds, texture or storage operands, which variants compete
// in autotune). The planner (kernels/planner.ts) reads it; kernels read their tuning from it.
//
// Two classes of adapter are told apart:
//   * `software` (lavapipe, llvmpipe, SwiftShader: WGSL on the CPU): every per-invocation storage load is
//     a gather, a texel fetch a vectorised gather, barriers are costly and spilled registers cheap, so
//     GEMMs read textures, blocks are large and nothing uses workgroup memory. The thresholds come from
//     timing every 1×1 conv of the seven models at batch 64 on lavapipe (the numbers, and the A/B runs
//     behind each field below: bench/results-lavapipe.txt, "Adapter profile: the measurements").
//   * `gpu` (any other adapter): workgroup-memory tiles, vec4 storage loads, split-K for long
//     reductions, halo tiles for the depthwise 7×7; register blocks of 8 (of 16 would spill).

import { gpu } from "./runtime.ts";

/** Tuning of the texture GEMM (kernels/matmul.ts, v3). */
export interface TextureGemmTuning {
  /** Rows of C per invocation (multiple of 4). */
  rows: number;
  /** vec4 columns of C per invocation. */
  colVecs: number;
  /** Workgroup size along columns (x) and rows (y). */
  wgx: number;
  wgy: number;
  /**
   * Fewest invocations per workgroup when there are few blocks (workgroups shrink so every core gets
   * work): 8, a lavapipe SIMD row of 8 lanes (256-bit AVX2); a GPU's warp is wider, but 8 keeps 8+
   * workgroups for small weight gradients there too.
   */
  minThreads: number;
}

export interface AdapterProfile {
  kind: "software" | "gpu";
  /** Register block edge (multiple of 4) of the direct and depthwise kernels. */
  blockEdge: number;
  /**
   * Register block edge (multiple of 4) of the vec4 1×1-conv GEMMs (gemm1x1/vec4). On lavapipe 32: each
   * operand load is a per-lane gather, so a larger block (loads ∝ edge, FMAs ∝ edge²) pays, up to 32.
   * The price is compile time, paid once per shape (several times that of a 16×16 block).
   */
  gemmBlockEdge: number;
  /**
   * Whether the vec4 1×1-conv GEMMs fetch their operands from textures by default (gemm1x1/vec4-texture,
   * a copy of each operand first). On lavapipe a texel fetch is a vectorised gather, a storage load a
   * per-lane loop, so the copies pay.
   */
  gemmTextures: boolean;
  /**
   * Whether kernels read operand textures as read-only storage textures (kernels/texture_operand.ts,
   * where WGSL has the language feature) instead of sampled ones: on lavapipe a storage texel fetch
   * skips the sampler's level and filtering work.
   */
  storageTextureReads: boolean;
  /**
   * Whether the direct depthwise kernels fetch their input (and the weight gradient its dy) from
   * operand textures, a copy each first (as gemmTextures, for the depthwise passes).
   */
  depthwiseTextures: boolean;
  /**
   * The vec4 1×1 weight gradient splits its K = N·H·W pixels into chunks (partial dw, summed by a second
   * pass) until it runs this many invocations, no further (0: as far as the partials' memory allows):
   * enough invocations to fill every core, no more partial sums than that needs.
   */
  splitInvocations: number;
  /** Whether GEMMs read their operands from textures by default (else the tiled storage GEMM). */
  textureGemm: boolean;
  textureTuning: TextureGemmTuning;
  /**
   * Whether the texture GEMM (kernels/matmul.ts v3) is a candidate for 1×1 convs: their default (with
   * textureGemm) and timed by autotune. Off on a software adapter: in a training step its operand copies
   * cost more than its small (16×8) blocks save, while with the vec4 GEMM's large blocks the same copies
   * pay (gemmTextures). An override can still force it.
   */
  conv1x1Texture: boolean;
  /** With conv1x1Texture, the texture GEMM serves 1×1 convs whose result is at least this many rows × columns. */
  textureMin: { rows: number; cols: number };
  /** ... and weight gradients at least this large (O × C). */
  textureMinWeight: { rows: number; cols: number };
  /** Images smaller than this many pixels run a 1×1 conv as one GEMM over all images. */
  columnsBelowPixels: number;
  /**
   * With conv1x1Texture, the columns texture GEMM (all images as one GEMM) is the default from this many
   * result rows and reduction length on: below, its two transposes cost more than the wider GEMM saves.
   */
  columnsTextureMin: { rows: number; k: number };
  /**
   * Workgroup size (1-D) of the convolution kernels (direct, depthwise, vec4 and scalar 1×1): 64, a
   * multiple of every adapter's SIMD width (8 lanes on lavapipe, 32 or 64 on GPUs).
   */
  convWorkgroup: number;
  /**
   * Output pixels per invocation of the direct kernels (a row segment of up to this many columns, more
   * rows when the output is narrower): 8 keeps a block's input segments and accumulators in registers
   * with the profile's blockEdge output channels.
   */
  directPixels: number;
  /**
   * The direct weight gradient's block besides blockEdge output channels: input channels × output
   * columns per invocation (4 × 4: the dy and x segments of one tap row stay in registers).
   */
  directWeightBlock: { inChannels: number; cols: number };
  /**
   * Output block of one direct depthwise invocation, rows × columns (4 × 8: each input row segment is
   * loaded once for every output row of the block; the k×k weights stay in registers).
   */
  depthwiseBlock: { rows: number; cols: number };
  /** Whether the halo-tiled depthwise kernels (workgroup memory) are the default where they apply. */
  tiledDepthwise: boolean;
  /** Fusions off by default on this adapter (an override can still turn them on). */
  fusionsOff: readonly string[];
  /** Variants the planner never offers on this adapter (they do not finish compiling there). */
  variantsOff: readonly string[];
}

const SOFTWARE: AdapterProfile = {
  kind: "software",
  blockEdge: 16,
  gemmBlockEdge: 32,
  gemmTextures: true,
  storageTextureReads: true,
  depthwiseTextures: true,
  splitInvocations: 1024,
  textureGemm: true,
  conv1x1Texture: false,
  textureTuning: { rows: 16, colVecs: 2, wgx: 8, wgy: 8, minThreads: 8 },
  textureMin: { rows: 64, cols: 64 },
  textureMinWeight: { rows: 32, cols: 32 },
  columnsBelowPixels: 64,
  columnsTextureMin: { rows: 64, k: 64 },
  convWorkgroup: 64,
  directPixels: 8,
  directWeightBlock: { inChannels: 4, cols: 4 },
  depthwiseBlock: { rows: 4, cols: 8 },
  tiledDepthwise: false,
  // the depthwise weight gradient's workgroup tree: slower than the split reduction and its second
  // pass (barriers are costly on a CPU)
  fusionsOff: ["depthwise-weight-tree"],
  variantsOff: [],
};

/**
 * lavapipe's llvmpipe behind wgpu's OpenGL backend (the host says "gl"): the same adapter
 * name, but the depthwise weight gradient's workgroup tree and the halo-tiled depthwise weight gradient
 * never finish there (measured: a narrow final step, or autotune timing that variant, did not complete
 * in 5 minutes; the split reduction runs), so both are off.
 */
const SOFTWARE_GL: AdapterProfile = {
  ...SOFTWARE,
  fusionsOff: ["depthwise-weight-tree"],
  variantsOff: ["depthwise/tiled"],
};

/**
 * Chromium's SwiftShader (Dawn): register blocks of 8. Its shader compiler takes minutes over the
 * 16-wide unrolled blocks (fused depthwise and vec4 1×1 kernels above all), while the kernels run
 * about as fast with 8.
 */
const SOFTWARE_SWIFTSHADER: AdapterProfile = {
  ...SOFTWARE,
  blockEdge: 8,
  gemmBlockEdge: 8,
  gemmTextures: false,
  storageTextureReads: false, // not measured there
  depthwiseTextures: false, // not measured there
  fusionsOff: [],
};

const GPU: AdapterProfile = {
  kind: "gpu",
  blockEdge: 8,
  gemmBlockEdge: 8,
  gemmTextures: false,
  // sampled textures: a GPU's texture cache serves them
  storageTextureReads: false,
  depthwiseTextures: false,
  splitInvocations: 0,
  textureGemm: false,
  conv1x1Texture: true,
  textureTuning: { rows: 8, colVecs: 2, wgx: 8, wgy: 8, minThreads: 8 },
  textureMin: { rows: 64, cols: 64 },
  textureMinWeight: { rows: 32, cols: 32 },
  columnsBelowPixels: 64,
  columnsTextureMin: { rows: 64, k: 64 },
  convWorkgroup: 64,
  directPixels: 8,
  directWeightBlock: { inChannels: 4, cols: 4 },
  depthwiseBlock: { rows: 4, cols: 8 },
  tiledDepthwise: true,
  fusionsOff: [],
  variantsOff: [],
};

/** The profile for an adapter of this name behind this host backend ("gl", "vulkan", … or ""). */
export function profileFor(name: string, isFallback = false, backendName = ""): AdapterProfile {
  if (!isSoftwareAdapter(name, isFallback)) return GPU;
  if (/swiftshader/i.test(name)) return SOFTWARE_SWIFTSHADER;
  return backendName === "gl" ? SOFTWARE_GL : SOFTWARE;
}

/** Whether an adapter of this name runs WGSL on the CPU. */
export function isSoftwareAdapter(name: string, isFallback = false): boolean {
  return isFallback || /llvmpipe|lavapipe|swiftshader/i.test(name);
}

let forced: AdapterProfile | null = null;
let backend = "";
let cached: { name: string; profile: AdapterProfile } | null = null;
let tuning: Partial<Pick<AdapterProfile, TuningKey>> = {};
let softwareTuning: Partial<Pick<AdapterProfile, TuningKey>> = {};

/** The numeric knobs `setProfileTuning` may change. */
const TUNING_KEYS = ["blockEdge", "gemmBlockEdge", "columnsBelowPixels"] as const;
type TuningKey = typeof TUNING_KEYS[number];

/**
 * Changes numeric knobs of the detected profile, from a spec like "gemmBlockEdge=16,blockEdge=8" (the
 * CONVNEXT_PROFILE variable, read by experiments/host.ts; null or "" restores the defaults). Block edges
 * are multiples of 4 from 4 to 64. A profile forced by `setProfile` is used as given.
 */
export function setProfileTuning(spec: string | null): void {
  tuning = parseTuning(spec);
  cached = null;
}

/**
 * The same knobs, applied only where the detected adapter is a software one (the CONVNEXT_TEST_PROFILE
 * variable, which `deno task test` sets): a GPU runs its own profile under the test tasks. The suite
 * runs lavapipe with gemmBlockEdge=16 since a 32×32 block takes 4-7× longer to compile on llvmpipe
 * (seconds per kernel, and the suite builds hundreds), while the registry sweep (tests/registry_sweep.ts)
 * forces the profiles themselves and so still checks the 32-wide kernels. Knobs of setProfileTuning win.
 */
export function setTestProfileTuning(spec: string | null): void {
  softwareTuning = parseTuning(spec);
  cached = null;
}

function parseTuning(spec: string | null): Partial<Record<TuningKey, number>> {
  const next: Partial<Record<TuningKey, number>> = {};
  for (const part of (spec ?? "").split(",").map((x) => x.trim()).filter(Boolean)) {
    const [key, value, extra] = part.split("=").map((x) => x.trim());
    if (!(TUNING_KEYS as readonly string[]).includes(key) || value === undefined || extra !== undefined) {
      throw new Error(`profile tuning "${part}": expected KEY=N with KEY one of ${TUNING_KEYS.join(", ")}`);
    }
    const n = Number(value);
    const edge = key !== "columnsBelowPixels";
    if (!Number.isInteger(n) || n < 1 || (edge && (n % 4 !== 0 || n > 64))) {
      throw new Error(
        `profile tuning "${part}": ${key} must be ${
          edge ? "a multiple of 4 from 4 to 64" : "a positive integer"
        }`,
      );
    }
    next[key as TuningKey] = n;
  }
  return next;
}

/** Tells the profile which backend the host's WebGPU uses under the adapter ("gl" matters; see SOFTWARE_GL). */
export function setBackendHint(name: string): void {
  backend = name;
  cached = null;
}

/** The profile of the current adapter with `setProfileTuning`'s knobs (or the one forced by `setProfile`). */
export function adapterProfile(): AdapterProfile {
  if (forced) return forced;
  const c = gpu();
  if (cached?.name !== c.adapterName) {
    const detected = profileFor(c.adapterName, c.isFallbackAdapter, backend);
    const test = detected.kind === "software" ? softwareTuning : {};
    cached = { name: c.adapterName, profile: { ...detected, ...test, ...tuning } };
  }
  return cached.profile;
}

/** Forces a profile ("software", "gpu" or a full profile; null restores detection), e.g. for tests. */
export function setProfile(p: AdapterProfile | "software" | "gpu" | null): void {
  forced = p === "software" ? SOFTWARE : p === "gpu" ? GPU : p;
}

/** A register block edge for a dimension of `size`: a multiple of 4, at most `edge`. */
const clampEdge = (edge: number, size: number) => Math.min(edge, Math.ceil(size / 4) * 4);

/** Register block edge of the direct and depthwise kernels for a dimension of `size`. */
export function blockEdge(size: number): number {
  return clampEdge(adapterProfile().blockEdge, size);
}

/** Register block edge of the vec4 1×1-conv GEMMs (at most `edge`, the profile's) for a dimension of `size`. */
export function gemmBlockEdge(size: number, edge = adapterProfile().gemmBlockEdge): number {
  return clampEdge(edge, size);
}
