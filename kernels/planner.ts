// The planner: which kernel variant runs a convolution pass or a matmul. `chooseConv` and `chooseMatmul`
// are pure functions of the shape, the adapter profile (kernels/profile.ts), the override rules and the
// autotuned winners, over the families' variant tables (kernels/variant.ts says what an entry holds):
// the default is the applicable variant the profile ranks first; an autotuned winner (kernels/autotune.ts
// measures candidates) replaces it; an override (API or the host's environment variable) replaces both.
// The planner's state (overrides, winners, queued tunes, autotune on or off, the plan log) is one
// object, kernels/plan_context.ts, which `initGPU` creates; the functions below other than the pure
// ones are accessors of it. The choice itself is kernels/plan_core.ts (over a table it is given, so the
// families' dispatch functions plan through it without importing this module); the fusions and whether
// each is on are kernels/fusions.ts. This module puts the tables together and keeps the public API.
//
// The tables, in the order candidates are listed (kernels/conv.ts `convTable` joins the conv ones):
//   patches     kernels/patches.ts    non-overlapping windows without padding: a graph rewrite
//   gemm1x1/*   kernels/conv1x1.ts    1×1 stride 1 as GEMMs (texture, tiled, vec4, scalar, columns)
//   depthwise/* kernels/depthwise.ts  groups = C = O (tiled: halo tiles; direct: register rows)
//   direct/*    kernels/conv.ts       everything else (dense or grouped k×k, stems)
//   matmul/*    kernels/matmul.ts     texture, tiled, generic

import { type AdapterProfile, adapterProfile } from "./profile.ts";
import { plannerContext } from "./runtime.ts";
import type { ConvShape, MatmulDims } from "./shapes.ts";
import type { ConvEpilogue, ConvPass, ConvVariant, MatmulVariant } from "./variant.ts";
import { convTable } from "./conv.ts";
import { MATMUL_VARIANTS } from "./matmul.ts";
import { type Fusion, FUSIONS } from "./fusions.ts";
import {
  applicableConvIn,
  applicableMatmulIn,
  chooseConvIn,
  chooseMatmulIn,
  type Decision,
  planConvIn,
  planMatmulIn,
  tunedAmongIn,
} from "./plan_core.ts";
import type { OverrideRule, Plan, PlanEntry, TuneJob, Winner } from "./plan_context.ts";

export type { ConvEpilogue, ConvPass } from "./variant.ts";
export { conv1x1Dims, convTuneKey, isPatchConv, matmulTuneKey, textureGemmApplies } from "./variant.ts";
export type { Plan, PlanEntry, PlanSource, TuneJob } from "./plan_context.ts";
export { type Fusion, fusionEnabled, FUSIONS } from "./fusions.ts";
export type { Decision } from "./plan_core.ts";
export { convTable } from "./conv.ts";

// ---------------------------------------------------------------- the tables

/** Every matmul variant. */
export function matmulTable(): MatmulVariant[] {
  return MATMUL_VARIANTS;
}

/** The names of every variant of every family. */
export function knownVariants(): string[] {
  return [...convTable(), ...matmulTable()].map((v) => v.name);
}

// ---------------------------------------------------------------- the pure planner

/** The conv variants that can run pass `pass` of `s` on profile `prof`, in table order. */
export function applicableConv(s: ConvShape, pass: ConvPass, prof: AdapterProfile): ConvVariant[] {
  return applicableConvIn(convTable(), s, pass, prof);
}

/** The matmul variants that can run `d` on profile `prof`. */
export function applicableMatmul(d: MatmulDims, prof: AdapterProfile): MatmulVariant[] {
  return applicableMatmulIn(matmulTable(), d, prof);
}

/** Of `candidates` (names), those autotune times on profile `prof` (each entry's `tuned`). */
export function tunedAmong(candidates: string[], prof: AdapterProfile): string[] {
  return tunedAmongIn([...convTable(), ...matmulTable()], candidates, prof);
}

/** The arguments of `chooseConvIn` after its table (their names and meanings stay its own). */
type ConvChoice = Parameters<typeof chooseConvIn> extends [unknown, ...infer Rest] ? Rest : never;

/**
 * The variant that runs pass `pass` of `s` (with GEMM epilogue `epilogue`, if any): `chooseConvIn` over
 * the current conv table, a pure function of the shape, the profile, the override rules and the autotuned
 * winners (null: autotune off).
 */
export function chooseConv(...args: ConvChoice): Decision {
  return chooseConvIn(convTable(), ...args);
}

/** The variant that runs matmul `d`: as `chooseConv`. */
export function chooseMatmul(
  d: MatmulDims,
  prof: AdapterProfile,
  overrides: readonly OverrideRule[],
  winners: ReadonlyMap<string, Winner> | null,
): Decision {
  return chooseMatmulIn(matmulTable(), d, prof, overrides, winners);
}

// ---------------------------------------------------------------- the tables, by the current profile

/** Every variant that can run this convolution pass, in table order. */
export function convVariants(s: ConvShape, pass: ConvPass): string[] {
  return applicableConv(s, pass, adapterProfile()).map((v) => v.name);
}

/** The profile's choice for a convolution pass (no autotune, no override). */
export function defaultConvVariant(s: ConvShape, pass: ConvPass): string {
  return chooseConv(s, pass, adapterProfile(), [], null).variant;
}

/** Every variant that can run this matmul. */
export function matmulVariants(d: MatmulDims): string[] {
  return applicableMatmul(d, adapterProfile()).map((v) => v.name);
}

/** The profile's choice for a matmul. */
export function defaultMatmulVariant(d: MatmulDims): string {
  return chooseMatmul(d, adapterProfile(), [], null).variant;
}

/**
 * Of the variants that can run a shape, those autotune times on the current profile (each table entry's
 * `tuned`: e.g. the scalar 1×1 GEMM only where no vec4 one can run, the texture GEMM's only where the
 * profile makes them candidates). A stored winner that beat another set of candidates is timed again.
 */
export function tuneCandidates(all: string[]): string[] {
  return tunedAmong(all, adapterProfile());
}

// ---------------------------------------------------------------- overrides

/**
 * Forces variants, e.g. "conv=tiled" (every conv that has a `…/tiled` variant), or
 * "conv.weightGrad=gemm1x1/vec4,matmul=generic". A rule applies where the variant can run the shape;
 * later rules win. `null` or "" clears. Throws on a rule that names no known variant.
 */
export function setPlanOverride(spec: string | null): void {
  plannerContext().overrides = parsePlanOverride(spec);
}

/** The rules of an override spec (see `setPlanOverride`), checked against the variant tables. */
export function parsePlanOverride(spec: string | null): OverrideRule[] {
  const rules: OverrideRule[] = [];
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
    const known = knownVariants();
    if (!known.some((v) => v === m[2] || v.endsWith(`/${m[2]}`))) {
      throw new Error(`Plan override "${part}": unknown variant "${m[2]}"; known: ${known.join(", ")}`);
    }
    rules.push({ target: m[1], variant: m[2] });
  }
  return rules;
}

/** The override rules in force, as a spec string. */
export function planOverride(): string {
  return plannerContext().overrides.map((r) => `${r.target}=${r.variant}`).join(",");
}

/** Runs `fn` with `spec` as the override, then restores the previous one. */
export function withPlanOverride<T>(spec: string, fn: () => T): T {
  const ctx = plannerContext();
  const saved = ctx.overrides;
  setPlanOverride(spec);
  try {
    return fn();
  } finally {
    ctx.overrides = saved;
  }
}

// ---------------------------------------------------------------- autotuned winners

// Winners by shape key (kernels/autotune.ts measures them and records them in the context), each with
// the candidates it beat: when a new variant joins them (or one leaves), the shape is timed again.
// Shapes met without a winner while autotune is on are queued as pending, so `autotune()` can time them
// later: recording a step is synchronous, timing is not.

/** Turns the use of autotuned winners (and the queueing of untuned shapes) on or off. */
export function setAutotune(on: boolean): void {
  const ctx = plannerContext();
  ctx.autotune = on;
  if (!on) ctx.pending.clear();
}

export function autotuneEnabled(): boolean {
  return plannerContext().autotune;
}

/**
 * Records a measured winner among `candidates` for a shape key (see `convTuneKey`, `matmulTuneKey`),
 * with a note on the decision (e.g. its margin) that the store keeps beside it.
 */
export function recordWinner(key: string, variant: string, candidates: string[], note?: string): void {
  const ctx = plannerContext();
  ctx.winners.set(key, { variant, among: candidates.join(","), ...(note ? { note } : {}) });
  ctx.pending.delete(key);
}

/** The winners known so far, as "variant among candidate,candidate,…[ note]" (to persist them). */
export function tunedWinners(): Record<string, string> {
  return Object.fromEntries(
    [...plannerContext().winners].map((
      [k, w],
    ) => [k, `${w.variant} among ${w.among}${w.note ? ` ${w.note}` : ""}`]),
  );
}

/**
 * Loads persisted winners; entries of another form, of unknown variants, or under keys without an
 * anchored size (a store from before tune keys had batch buckets) are dropped.
 */
export function loadWinners(rec: Record<string, string>): void {
  const known = knownVariants(), winners = plannerContext().winners;
  for (const [k, v] of Object.entries(rec)) {
    const m = /^(\S+) among (\S+)(?: (.+))?$/.exec(v);
    if (!m || !known.includes(m[1]) || !/[:,]~\d/.test(k)) continue;
    winners.set(k, { variant: m[1], among: m[2], ...(m[3] ? { note: m[3] } : {}) });
  }
}

export function clearWinners(): void {
  const ctx = plannerContext();
  ctx.winners.clear();
  ctx.pending.clear();
}

/** Forgets the queued shapes (they are queued again when met): a run tunes the shapes of its own step. */
export function clearPending(): void {
  plannerContext().pending.clear();
}

/** Shapes met with autotune on and no winner yet. */
export function pendingTunes(): [string, TuneJob][] {
  return [...plannerContext().pending.entries()];
}

// ---------------------------------------------------------------- the plan

/** Starts logging every planning decision. */
export function startPlanLog(): void {
  plannerContext().log = [];
}

/** Stops logging and returns the decisions since `startPlanLog()`. */
export function stopPlanLog(): PlanEntry[] {
  const ctx = plannerContext();
  const l = ctx.log ?? [];
  ctx.log = null;
  return l;
}

/**
 * The variant that runs pass `pass` of convolution `s` (`layer` names it in the plan log), with the
 * GEMM epilogue it will run with, if any.
 */
export function planConv(s: ConvShape, pass: ConvPass, layer = "", epilogue?: ConvEpilogue): Plan {
  return planConvIn(convTable(), s, pass, layer, epilogue);
}

/** The variant that runs matmul `d` (`layer` names it in the plan log). */
export function planMatmul(d: MatmulDims, layer = ""): Plan {
  return planMatmulIn(matmulTable(), d, layer);
}
