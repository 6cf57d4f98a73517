// What a kernel variant is. Each family keeps its variants in one table in its own file (1×1 GEMMs:
// kernels/conv1x1.ts; depthwise: kernels/depthwise.ts; direct: kernels/conv.ts; patches:
// kernels/patches.ts; matmul: kernels/matmul.ts), as Burn/CubeCL's TunableSet keeps its tunables: every
// fact about a variant (its name, which passes it runs, when it can run a shape, how the profile ranks it
// for the default, whether autotune times it, and the code that runs it) is in its entry. The planner
// (kernels/planner.ts) reads the tables and nothing else; the dispatch functions look the variant up
// and call its `run`. A variant that cannot run a shape is not applicable: nothing runs another kernel
// in its place.
//
// This module holds the entry types and the shape predicates the tables share (types only imported, so
// any kernel file may import it).

import type { Binding } from "./runtime.ts";
import type { AdapterProfile, TextureGemmTuning } from "./profile.ts";
import type { GemmEpilogue } from "./epilogue.ts";
import type { ConvEpilogue, ConvPass } from "./plan_context.ts";
import { convKey, type ConvShape, type MatmulDims, matmulKey } from "./shapes.ts";

export type { ConvEpilogue, ConvPass } from "./plan_context.ts";
export const CONV_PASSES: readonly ConvPass[] = ["forward", "inputGrad", "weightGrad"];

/** The buffers of one convolution pass. */
export type ConvBindings =
  | {
    pass: "forward";
    x: Binding;
    w: Binding;
    b: Binding | null;
    y: Binding;
    /** Per-block statistics beside y (variants with `statsParts`). */
    parts?: Binding | null;
    /** GELU in the store (variants with `epilogue`): y = gelu(conv), and pre = conv where given. */
    gelu?: { pre: Binding | null };
  }
  | {
    pass: "inputGrad";
    dy: Binding;
    w: Binding;
    dx: Binding;
    /** times gelu'(pre) in the store (variants with `epilogue`). */
    geluGradOf?: Binding;
  }
  | {
    pass: "weightGrad";
    dy: Binding;
    x: Binding;
    dw: Binding;
    /** Σ dy summed by the same kernel (variants with `biasGrad`). */
    db?: Binding | null;
  };

/** One way to run convolution passes. */
export interface ConvVariant {
  /** "family/name", as overrides, stored winners and the plan log name it. */
  name: string;
  /** The passes it runs. */
  passes: readonly ConvPass[];
  /** Whether it can run pass `pass` of `s` on an adapter of profile `prof`. */
  applies(s: ConvShape, pass: ConvPass, prof: AdapterProfile): boolean;
  /**
   * Its rank for the profile's default where it applies: the applicable variant of lowest rank is the
   * default; null: never the default (autotune or an override may still pick it).
   */
  rank(s: ConvShape, pass: ConvPass, prof: AdapterProfile): number | null;
  /** Whether autotune times it among `candidates` (the applicable names); absent: always. */
  tuned?(prof: AdapterProfile, candidates: readonly string[]): boolean;
  /** A rewrite of the graph (autograd/ops/conv.ts does it), not a kernel: no timer compares it. */
  rewrite?: boolean;
  /** Whether its forward and input gradient take a GELU epilogue in their store. */
  epilogue?: boolean;
  /** Whether its weight-gradient kernel also sums the bias gradient. */
  biasGrad?: boolean;
  /** Blocks per image whose statistics its forward can write beside y (absent: none). */
  statsParts?(s: ConvShape): number;
  /** Runs pass `b.pass` of `s`. */
  run(b: ConvBindings, s: ConvShape): void;
  /** The autotune key of a pass of `s`: shapes with the same key share a winner. */
  tuneKey(s: ConvShape, pass: ConvPass, epilogue?: ConvEpilogue): string;
}

/** The buffers and options of one matmul. */
export interface MatmulBindings {
  a: Binding;
  b: Binding;
  c: Binding;
  rowBias?: Binding;
  epilogue?: GemmEpilogue;
  tuning?: Partial<TextureGemmTuning>;
}

/** One way to run a matmul. */
export interface MatmulVariant {
  name: string;
  passes: readonly "forward"[];
  applies(d: MatmulDims, prof: AdapterProfile): boolean;
  rank(d: MatmulDims, prof: AdapterProfile): number | null;
  tuned?(prof: AdapterProfile, candidates: readonly string[]): boolean;
  /** Whether it adds a row bias and runs an epilogue in its store. */
  epilogue: boolean;
  run(b: MatmulBindings, d: MatmulDims): void;
  tuneKey(d: MatmulDims): string;
}

// Tune keys are anchored to shape classes, as Burn/CubeCL's anchored tune keys are: a size that moves
// with the batch is written as its bucket, the next power of two with a "~" before it, so that one
// winner serves every batch size of the bucket (the evaluation batch of 52 that of the training batch of
// 64), and a shape whose bucket has no winner takes the one of the nearest tuned bucket of the same class
// (kernels/plan_core.ts `nearestWinner`; the partial last batch of 16). A conv anchors its images and
// keeps the per-image sizes; a matmul, whose images may be any of batch, m or k, anchors all four.

/** The bucket of a size: the next power of two. */
export function sizeBucket(n: number): number {
  return n <= 1 ? 1 : 2 ** Math.ceil(Math.log2(n));
}

/** A size written as its bucket in a tune key. */
const anchor = (n: number) => `~${sizeBucket(n)}`;

export const convTuneKey = (s: ConvShape, pass: ConvPass, epilogue?: ConvEpilogue): string =>
  `conv.${pass}${epilogue ? `+${epilogue}` : ""}:${anchor(s.n)},${convKey(s).split(",").slice(1).join(",")}`;

/**
 * The tune key of a matmul: batch, m, n and k anchored, and whether the texture GEMM can take the exact
 * dims (the one candidate that depends on them), so that the shapes of a bucket share their candidates.
 */
export const matmulTuneKey = (d: MatmulDims): string => {
  const [, , , , flags] = matmulKey(d).split(",");
  const tex = textureGemmApplies(d) ? "" : ",notex";
  return `matmul:${[d.batch, d.m, d.n, d.k].map(anchor).join(",")},${flags}${tex}`;
};

// ---------------------------------------------------------------- shape predicates the tables share

export const isPointwise = (s: ConvShape): boolean =>
  s.k === 1 && s.stride === 1 && s.pad === 0 && s.groups === 1;
export const isDepthwise = (s: ConvShape): boolean => s.groups === s.c && s.o === s.c && s.c > 1;
/** Non-overlapping windows without padding: a 1×1 conv over gathered patches. */
export const isPatchConv = (s: ConvShape): boolean =>
  s.pad === 0 && s.groups === 1 && s.k <= s.stride && s.stride > 1;

/** Whether the texture GEMM can take these dims (vec4 texels along K, and along M/N where stored so). */
export function textureGemmApplies(d: MatmulDims): boolean {
  return d.k % 4 === 0 && (!d.transA || d.m % 4 === 0) && (d.transB || d.n % 4 === 0);
}

/** The GEMM of a 1×1 conv pass, per image (`columns`: over all images, as [C, N·P]). */
export function conv1x1Dims(s: ConvShape, pass: ConvPass, columns = false): MatmulDims {
  const p = s.h * s.w;
  const batch = columns ? 1 : s.n, n = columns ? s.n * p : p;
  if (pass === "forward") {
    return { batch, m: s.o, n, k: s.c, transA: false, transB: false, batchA: false, batchB: !columns };
  }
  if (pass === "inputGrad") {
    return { batch, m: s.c, n, k: s.o, transA: true, transB: false, batchA: false, batchB: !columns };
  }
  return {
    batch: s.n,
    m: s.o,
    n: s.c,
    k: p,
    transA: false,
    transB: true,
    batchA: true,
    batchB: true,
    sumBatch: true,
  };
}

/** The variant of this name in `table`, or an error naming the known ones. */
export function lookup<V extends { name: string }>(table: readonly V[], name: string, what: string): V {
  const v = table.find((x) => x.name === name);
  if (!v) {
    throw new Error(`${what}: unknown variant "${name}"; known: ${table.map((x) => x.name).join(", ")}`);
  }
  return v;
}
