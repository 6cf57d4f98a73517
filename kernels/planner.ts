// The planner: which kernel variant runs a convolution pass or a matmul. One pure function of the
// shapes and the adapter profile (kernels/profile.ts) gives the default; an autotuned winner
// (kernels/autotune.ts measures candidates) replaces it; an override (API or the host's environment
// variable) replaces both. Every choice can be logged, which is how a model's plan is listed.
//
// Convolution variants, by family:
//   patches              non-overlapping windows without padding (2×2/2 downsampling, 1×1/2 shortcuts):
//                        gather the windows, then a 1×1 conv (autograd/ops/conv.ts does the rewrite)
//   gemm1x1/texture      1×1/1: a GEMM per image with texture operands (kernels/matmul.ts v3)
//   gemm1x1/columns-texture  the same over all images at once: [N,C,P] → [C,N·P], GEMM, back (small P)
//   gemm1x1/tiled        1×1/1: the workgroup-tiled storage GEMM (kernels/gemm_tiled.ts), split-K for
//                        the weight gradient
//   gemm1x1/columns-tiled    the tiled GEMM over all images at once
//   gemm1x1/vec4         1×1/1: register-blocked GEMM over the pixels with vec4 loads (C, H·W % 4 = 0)
//   gemm1x1/vec4-texture the same with both operands fetched from textures (a copy each; where they fit)
//   gemm1x1/vec4-texture-half  the same with half the register block edge (autotune weighs both)
//   gemm1x1/scalar       1×1/1: 4×4 blocks, scalar loads, any sizes
//   depthwise/direct     groups = C = O: register-blocked rows, any stride (kernels/depthwise.ts)
//   depthwise/tiled      groups = C = O, stride 1: halo tiles in workgroup memory; split-reduction
//                        weight gradient (kernels/depthwise_tiled.ts)
//   direct/blocked       everything else (dense or grouped k×k, stems): kernels/conv.ts
// Matmul variants: matmul/texture, matmul/tiled, matmul/generic.

import { adapterProfile } from "./profile.ts";
import { fitsOperandTexture } from "./texture_operand.ts";
import { depthwiseTiledSupports } from "./depthwise_tiled.ts";
import { convKey, type ConvShape, type MatmulDims, matmulKey } from "./shapes.ts";

export type ConvPass = "forward" | "inputGrad" | "weightGrad";
export type PlanSource = "default" | "autotune" | "override";
export interface Plan {
  variant: string;
  source: PlanSource;
}

// ---------------------------------------------------------------- what can run a shape

/** Whether the texture GEMM can take these dims (vec4 texels along K, and along M/N where stored so). */
export function textureGemmApplies(d: MatmulDims): boolean {
  return d.k % 4 === 0 && (!d.transA || d.m % 4 === 0) && (d.transB || d.n % 4 === 0);
}

const isPointwise = (s: ConvShape) => s.k === 1 && s.stride === 1 && s.pad === 0 && s.groups === 1;
const isDepthwise = (s: ConvShape) => s.groups === s.c && s.o === s.c && s.c > 1;
/** Non-overlapping windows without padding: a 1×1 conv over gathered patches. */
export const isPatchConv = (s: ConvShape): boolean =>
  s.pad === 0 && s.groups === 1 && s.k <= s.stride && s.stride > 1;
const TILED_PASS = { forward: "forward", inputGrad: "input", weightGrad: "weight" } as const;

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

/** Every variant that can run this convolution pass, best first by the profile's lights. */
export function convVariants(s: ConvShape, pass: ConvPass): string[] {
  // the backward passes of a patch conv are planned only when its forward did not rewrite the graph
  if (isPatchConv(s)) return pass === "forward" ? ["patches", "direct/blocked"] : ["direct/blocked"];
  if (isDepthwise(s)) {
    const tiled = depthwiseTiledSupports(s, TILED_PASS[pass]) &&
      !adapterProfile().variantsOff.includes("depthwise/tiled");
    return tiled ? ["depthwise/tiled", "depthwise/direct"] : ["depthwise/direct"];
  }
  if (!isPointwise(s)) return ["direct/blocked"];
  const v: string[] = [];
  const p = s.h * s.w;
  if (pass !== "weightGrad" && p < adapterProfile().columnsBelowPixels && s.n > 1) {
    if (textureGemmApplies(conv1x1Dims(s, pass, true))) v.push("gemm1x1/columns-texture");
    v.push("gemm1x1/columns-tiled");
  }
  if (textureGemmApplies(conv1x1Dims(s, pass))) v.push("gemm1x1/texture");
  v.push("gemm1x1/tiled");
  if (s.c % 4 === 0 && p % 4 === 0) {
    if ([s.n * s.c * p, s.n * s.o * p, s.o * s.c].every(fitsOperandTexture)) {
      v.push("gemm1x1/vec4-texture", "gemm1x1/vec4-texture-half");
    }
    v.push("gemm1x1/vec4");
  }
  v.push("gemm1x1/scalar");
  return v;
}

/** The profile's choice for a convolution pass (no autotune, no override). */
export function defaultConvVariant(s: ConvShape, pass: ConvPass): string {
  const prof = adapterProfile();
  const v = convVariants(s, pass);
  if (v[0] === "patches") return "patches";
  if (v[0].startsWith("depthwise/")) return prof.tiledDepthwise ? v[0] : "depthwise/direct";
  if (v[0] === "direct/blocked") return v[0];
  if (!prof.textureGemm) {
    return v.includes("gemm1x1/columns-tiled") ? "gemm1x1/columns-tiled" : "gemm1x1/tiled";
  }
  const vec4 = prof.gemmTextures && v.includes("gemm1x1/vec4-texture")
    ? "gemm1x1/vec4-texture"
    : "gemm1x1/vec4";
  if (!prof.conv1x1Texture) return v.includes(vec4) ? vec4 : "gemm1x1/scalar";
  if (pass === "weightGrad") {
    const { rows, cols } = prof.textureMinWeight;
    if (v.includes("gemm1x1/texture") && s.o >= rows && s.c >= cols) return "gemm1x1/texture";
  } else {
    const d = conv1x1Dims(s, pass);
    if (v.includes("gemm1x1/columns-texture") && d.m >= 64 && d.k >= 64) return "gemm1x1/columns-texture";
    const { rows, cols } = prof.textureMin;
    if (v.includes("gemm1x1/texture") && d.m >= rows && d.n >= cols) return "gemm1x1/texture";
  }
  return v.includes(vec4) ? vec4 : "gemm1x1/scalar";
}

/** Every variant that can run this matmul. */
export function matmulVariants(d: MatmulDims): string[] {
  return [...(textureGemmApplies(d) ? ["matmul/texture"] : []), "matmul/tiled", "matmul/generic"];
}

/** The profile's choice for a matmul. */
export function defaultMatmulVariant(d: MatmulDims): string {
  if (!adapterProfile().textureGemm) return "matmul/tiled";
  return textureGemmApplies(d) ? "matmul/texture" : "matmul/generic";
}

// ---------------------------------------------------------------- overrides

/** Rules `target=variant`: target `conv`, `conv.forward|inputGrad|weightGrad` or `matmul`. */
let overrides: { target: string; variant: string }[] = [];

/**
 * Forces variants, e.g. "conv=tiled" (every conv that has a `…/tiled` variant), or
 * "conv.weightGrad=gemm1x1/vec4,matmul=generic". A rule applies where the variant can run the shape;
 * later rules win. `null` or "" clears. Throws on a rule that names no known variant.
 */
export function setPlanOverride(spec: string | null): void {
  const rules: typeof overrides = [];
  for (const part of (spec ?? "").split(",").map((p) => p.trim()).filter(Boolean)) {
    const f = /^fuse(?:\.([\w-]+))?=(on|off)$/.exec(part);
    if (f) {
      if (f[1] && !FUSIONS.includes(f[1] as Fusion)) {
        throw new Error(`Plan override "${part}": unknown fusion "${f[1]}"; known: ${FUSIONS.join(", ")}`);
      }
      rules.push({ target: f[1] ? `fuse.${f[1]}` : "fuse", variant: f[2] });
      continue;
    }
    const m = /^(conv|conv\.forward|conv\.inputGrad|conv\.weightGrad|matmul)=([\w/-]+)$/.exec(part);
    if (!m) {
      throw new Error(
        `Plan override "${part}": expected target=variant, target one of conv, conv.forward, conv.inputGrad, ` +
          `conv.weightGrad, matmul (e.g. "conv=tiled"), or fuse[.name]=on|off`,
      );
    }
    if (!KNOWN_VARIANTS.some((v) => v === m[2] || v.endsWith(`/${m[2]}`))) {
      throw new Error(
        `Plan override "${part}": unknown variant "${m[2]}"; known: ${KNOWN_VARIANTS.join(", ")}`,
      );
    }
    rules.push({ target: m[1], variant: m[2] });
  }
  overrides = rules;
}

/** The override rules in force, as a spec string. */
export function planOverride(): string {
  return overrides.map((r) => `${r.target}=${r.variant}`).join(",");
}

/** Runs `fn` with `spec` as the override, then restores the previous one. */
export function withPlanOverride<T>(spec: string, fn: () => T): T {
  const saved = overrides;
  setPlanOverride(spec);
  try {
    return fn();
  } finally {
    overrides = saved;
  }
}

export const KNOWN_VARIANTS = [
  "patches",
  "gemm1x1/texture",
  "gemm1x1/columns-texture",
  "gemm1x1/tiled",
  "gemm1x1/columns-tiled",
  "gemm1x1/vec4",
  "gemm1x1/vec4-texture",
  "gemm1x1/vec4-texture-half",
  "gemm1x1/scalar",
  "depthwise/direct",
  "depthwise/tiled",
  "direct/blocked",
  "matmul/texture",
  "matmul/tiled",
  "matmul/generic",
];

function overridden(target: string, candidates: string[]): string | null {
  let pick: string | null = null;
  for (const r of overrides) {
    if (r.target !== target && r.target !== target.split(".")[0]) continue;
    const hit = candidates.find((v) => v === r.variant || v.endsWith(`/${r.variant}`));
    if (hit) pick = hit;
  }
  return pick;
}

// ---------------------------------------------------------------- fusions

/**
 * Fused kernels that replace a chain of unfused ones (each has a CPU reference and a test equal to the
 * unfused path). All are on by default; "fuse=off" or "fuse.<name>=off" forces the unfused path.
 */
export const FUSIONS = [
  // ConvNeXt's 1×1 expand conv: bias + GELU in the GEMM's store (autograd/ops/pointwise_mlp.ts)
  "bias-gelu",
  // GELU's backward in the store of the next 1×1 conv's input-gradient GEMM (same op)
  "gelu-backward",
  // ConvNeXt's x + γ·branch (layer scale, identity drop path, residual add) in one pass each way, dγ
  // reduced in the backward pass (autograd/ops/layerscale.ts)
  "layerscale-residual",
  // the depthwise/direct weight gradient's sums added in its own workgroup, no second pass (depthwise.ts)
  "depthwise-weight-tree",
  // a normalisation's backward sums (two per statistic, dw and db per channel) in one reduction kernel,
  // or for GroupNorm and BatchNorm from per-row sums of g and g·(x − mean) (norm.ts normBackward)
  "norm-backward-sums",
  // BatchNorm's running statistics updated by its statistics kernel, no two extra passes (norm.ts)
  "norm-running-stats",
  // ConvNeXt's GroupNorm(1) statistics from blocks the depthwise/direct forward writes beside its output,
  // combined by one small kernel: no two passes over the tensor (autograd/ops/conv.ts conv2dWithGroupStats)
  "depthwise-norm-stats",
  // a conv's bias gradient summed by its weight-gradient kernel from the dy it reads anyway, no
  // reduction pass (kernels/conv.ts convBackwardWeight; the variants of conv1x1WeightBiasVariants)
  "weight-grad-bias",
] as const;
export type Fusion = typeof FUSIONS[number];

/** Whether fusion `name` is on (the last matching override rule wins). */
export function fusionEnabled(name: Fusion): boolean {
  let on = !adapterProfile().fusionsOff.includes(name);
  for (const r of overrides) if (r.target === "fuse" || r.target === `fuse.${name}`) on = r.variant === "on";
  return on;
}

// ---------------------------------------------------------------- autotuned winners

// Winners by shape key (kernels/autotune.ts measures them and records them here), each with the
// candidates it beat: when a new variant joins them (or one leaves), the shape is timed again. Shapes
// met without a winner while autotune is on are queued as pending, so `autotune()` can time them
// later: recording a step is synchronous, timing is not.

const winners = new Map<string, { variant: string; among: string }>();
/** A queued shape: a conv pass (with the GEMM epilogue it runs with, if any) or a matmul. */
export type TuneJob =
  | { op: "conv"; s: ConvShape; pass: ConvPass; epilogue?: ConvEpilogue }
  | { op: "matmul"; d: MatmulDims };
const pending = new Map<string, TuneJob>();
let autotuneOn = false;

/** Turns the use of autotuned winners (and the queueing of untuned shapes) on or off. */
export function setAutotune(on: boolean): void {
  autotuneOn = on;
  if (!on) pending.clear();
}

export function autotuneEnabled(): boolean {
  return autotuneOn;
}

/** Records a measured winner among `candidates` for a shape key (see `convTuneKey`, `matmulTuneKey`). */
export function recordWinner(key: string, variant: string, candidates: string[]): void {
  winners.set(key, { variant, among: candidates.join(",") });
  pending.delete(key);
}

/** The winners known so far, as "variant among candidate,candidate,…" (to persist them). */
export function tunedWinners(): Record<string, string> {
  return Object.fromEntries([...winners].map(([k, w]) => [k, `${w.variant} among ${w.among}`]));
}

/** Loads persisted winners; entries of another form (an older store) or unknown variants are dropped. */
export function loadWinners(rec: Record<string, string>): void {
  for (const [k, v] of Object.entries(rec)) {
    const m = /^(\S+) among (\S+)$/.exec(v);
    if (m && KNOWN_VARIANTS.includes(m[1])) winners.set(k, { variant: m[1], among: m[2] });
  }
}

export function clearWinners(): void {
  winners.clear();
  pending.clear();
}

/** Shapes met with autotune on and no winner yet. */
export function pendingTunes(): [string, TuneJob][] {
  return [...pending.entries()];
}

/**
 * The epilogue a 1×1 conv pass runs with in ConvNeXt's MLP (autograd/ops/pointwise_mlp.ts): GELU after
 * the forward, GELU's backward after the input gradient. Tuned apart: on lavapipe the epilogue moves
 * the best register block (8×8 images, batch 64: 16×16 blocks 1.7× faster with it, 32×32 without).
 */
export type ConvEpilogue = "gelu" | "dgelu";

export const convTuneKey = (s: ConvShape, pass: ConvPass, epilogue?: ConvEpilogue): string =>
  `conv.${pass}${epilogue ? `+${epilogue}` : ""}:${convKey(s)}`;
export const matmulTuneKey = (d: MatmulDims): string => `matmul:${matmulKey(d)}`;

// ---------------------------------------------------------------- the plan

export interface PlanEntry extends Plan {
  layer: string;
  op: "conv" | "matmul";
  pass: ConvPass | "forward";
  shape: string;
}

let log: PlanEntry[] | null = null;

/** Starts logging every planning decision. */
export function startPlanLog(): void {
  log = [];
}

/** Stops logging and returns the decisions since `startPlanLog()`. */
export function stopPlanLog(): PlanEntry[] {
  const l = log ?? [];
  log = null;
  return l;
}

/**
 * Of the variants that can run a shape, those autotune times: the scalar 1×1 GEMM only where a vec4
 * one can run; the texture GEMM's (gemm1x1/texture, columns-texture) only where the profile makes them
 * candidates (timed alone, they hide their cost in a step). The storage vec4 GEMM and its texture twin
 * are both timed: which operand path wins is the CPU's, not the adapter's (lavapipe on Zen 1, storage
 * loads 5.3 ns per float: storage lost every A/B; on an AVX-512 Xeon, 0.32 ns, as cheap as a texel: the
 * narrow final step at batch 64 ran 534 → 445 ms with storage operands, the full one 4.8 → 6.1 s). A
 * stored winner that beat another set of candidates is timed again.
 */
export function tuneCandidates(all: string[]): string[] {
  const prof = adapterProfile();
  const v = all.filter((x) => prof.conv1x1Texture || !/^gemm1x1\/(columns-)?texture$/.test(x));
  return v.some((x) => x.startsWith("gemm1x1/vec4")) ? v.filter((x) => x !== "gemm1x1/scalar") : v;
}

function decide(
  target: string,
  key: string,
  candidates: string[],
  fallback: string,
  queue: () => void,
): Plan {
  const forced = overridden(target, candidates);
  if (forced) return { variant: forced, source: "override" };
  // a graph rewrite (patches) is not a kernel a timer can compare: such shapes keep the default
  if (autotuneOn && candidates.length > 1 && !candidates.includes("patches")) {
    const w = winners.get(key);
    const tunable = tuneCandidates(candidates);
    if (w && w.among === tunable.join(",") && tunable.includes(w.variant)) {
      return { variant: w.variant, source: "autotune" };
    }
    if (!pending.has(key)) queue();
  }
  return { variant: fallback, source: "default" };
}

/**
 * The variant that runs pass `pass` of convolution `s` (`layer` names it in the plan log), with the
 * GEMM epilogue it will run with, if any.
 */
export function planConv(s: ConvShape, pass: ConvPass, layer = "", epilogue?: ConvEpilogue): Plan {
  const key = convTuneKey(s, pass, epilogue);
  const plan = decide(
    `conv.${pass}`,
    key,
    convVariants(s, pass),
    defaultConvVariant(s, pass),
    () => pending.set(key, { op: "conv", s, pass, epilogue }),
  );
  log?.push({ ...plan, layer, op: "conv", pass, shape: convKey(s) });
  return plan;
}

/** The variant that runs matmul `d` (`layer` names it in the plan log). */
export function planMatmul(d: MatmulDims, layer = ""): Plan {
  const key = matmulTuneKey(d);
  const plan = decide(
    "matmul",
    key,
    matmulVariants(d),
    defaultMatmulVariant(d),
    () => pending.set(key, { op: "matmul", d }),
  );
  log?.push({ ...plan, layer, op: "matmul", pass: "forward", shape: matmulKey(d) });
  return plan;
}
