// The planner's state, in one object: the override rules, the autotuned winners, the shapes queued for
// autotune, whether autotune is on, and the plan log. `initGPU` (kernels/runtime.ts) creates it with the
// device; tests replace it with a fresh one (`resetPlannerContext`). The planner itself
// (kernels/planner.ts) is a pure function of a shape, the profile, the overrides and the winners; the
// accessors there read and write this object, nothing else.

import type { ConvShape, MatmulDims } from "./shapes.ts";

export type ConvPass = "forward" | "inputGrad" | "weightGrad";

/**
 * The epilogue a 1×1 conv pass runs with in ConvNeXt's MLP (autograd/ops/pointwise_mlp.ts): GELU after
 * the forward, GELU's backward after the input gradient. Tuned apart: the epilogue can move the best
 * register block (bench/results-lavapipe.txt has the timings).
 */
export type ConvEpilogue = "gelu" | "dgelu";

export type PlanSource = "default" | "autotune" | "override";
export interface Plan {
  variant: string;
  source: PlanSource;
}

/** One logged planning decision. */
export interface PlanEntry extends Plan {
  layer: string;
  op: "conv" | "matmul";
  pass: ConvPass | "forward";
  shape: string;
}

/** A rule `target=variant`: target `conv`, `conv.forward|inputGrad|weightGrad`, `matmul`, or `fuse[.name]`. */
export interface OverrideRule {
  target: string;
  variant: string;
}

/** An autotuned winner with the candidates it beat (comma-joined). */
export interface Winner {
  variant: string;
  among: string;
  /** What the store keeps beside it (how it was decided: its margin, the timer). */
  note?: string;
}

/** A queued shape: a conv pass (with the GEMM epilogue it runs with, if any) or a matmul. */
export type TuneJob =
  | { op: "conv"; s: ConvShape; pass: ConvPass; epilogue?: ConvEpilogue }
  | { op: "matmul"; d: MatmulDims };

export interface PlannerContext {
  overrides: OverrideRule[];
  /** Winners by tune key (kernels/autotune.ts measures them). */
  winners: Map<string, Winner>;
  /** Shapes met without a winner while autotune was on, by tune key. */
  pending: Map<string, TuneJob>;
  /** Whether autotuned winners are used (and untuned shapes queued). */
  autotune: boolean;
  /** The decisions since `startPlanLog()`, or null when not logging. */
  log: PlanEntry[] | null;
}

export function createPlannerContext(): PlannerContext {
  return { overrides: [], winners: new Map(), pending: new Map(), autotune: false, log: null };
}
