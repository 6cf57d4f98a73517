// Autotune before a run's first step: one training step of the run's model, built on meta (no GPU work;
// the run's model and generators untouched), meets every conv and matmul shape the run will record, and
// the competing variants of those without a cached winner are timed, so every step of the run, resumed
// or not, uses the same kernels.

import { autotune } from "../kernels/autotune.ts";
import { autotuneEnabled } from "../kernels/planner.ts";
import { trainingStepPlan } from "../models/plan.ts";
import { runModelOptions, type RunSettings } from "./recipe.ts";

/** How often a long tuning says how far it is (the trainer's log may not be a terminal). */
const PROGRESS_EVERY_MS = 5000;

/** Tunes the kernels of a training step of `settings` at its batch size (nothing when autotune is off). */
export async function tuneRunKernels(
  settings: RunSettings & { batchSize: number },
  seed: number,
  log: (line: string) => void,
): Promise<void> {
  if (!autotuneEnabled()) return;
  trainingStepPlan(settings.stage, runModelOptions(settings, seed), settings.batchSize);
  const t0 = performance.now();
  let said = t0;
  const progress = (done: number, total: number) => {
    const now = performance.now(), secs = (now - t0) / 1e3;
    if (done === 0 && total > 0) {
      log(`autotune: timing the kernel variants of ${total} shapes (winners are cached for later runs)`);
    } else if (done < total && now - said >= PROGRESS_EVERY_MS) {
      const left = Math.round((secs / done) * (total - done));
      log(`autotune: ${done}/${total} shapes in ${secs.toFixed(0)} s, about ${left} s left`);
    } else return;
    said = now;
  };
  const tuned = await autotune({ progress });
  if (!tuned.length) return;
  const changed = tuned.filter((t) => t.winner !== t.fallback).length;
  const seconds = ((performance.now() - t0) / 1e3).toFixed(1);
  log(
    `autotune: timed the kernel variants of ${tuned.length} shapes in ${seconds} s (${changed} differ from the defaults)`,
  );
}
