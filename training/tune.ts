// Autotune before a run's first step: one training step of the run's model, built on meta (no GPU work;
// the run's model and generators untouched), meets every conv and matmul shape the run will record, and
// the competing variants of those without a cached winner are timed, so every step of the run, resumed
// or not, uses the same kernels.

import { autotune } from "../kernels/autotune.ts";
import { autotuneEnabled } from "../kernels/planner.ts";
import { trainingStepPlan } from "../models/plan.ts";
import { runModelOptions, type RunSettings } from "./recipe.ts";

/** Tunes the kernels of a training step of `settings` at its batch size (nothing when autotune is off). */
export async function tuneRunKernels(
  settings: RunSettings & { batchSize: number },
  seed: number,
  log: (line: string) => void,
): Promise<void> {
  if (!autotuneEnabled()) return;
  trainingStepPlan(settings.stage, runModelOptions(settings, seed), settings.batchSize);
  const t0 = performance.now();
  const tuned = await autotune();
  if (!tuned.length) return;
  const changed = tuned.filter((t) => t.winner !== t.fallback).length;
  const seconds = ((performance.now() - t0) / 1e3).toFixed(1);
  log(
    `autotune: timed the kernel variants of ${tuned.length} shapes in ${seconds} s (${changed} differ from the defaults)`,
  );
}
