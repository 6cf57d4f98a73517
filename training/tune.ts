// Autotune before a run's first step: one training step of the run's model, built on meta (no GPU work;
// the run's model and generators untouched), meets every conv and matmul shape the run will record, and
// the competing variants of those without a cached winner are timed (kernels/autotune.ts), largest first,
// within the run's time budget, so every step of the run, resumed or not, uses the same kernels. Shapes
// the budget leaves run the defaults and are tuned on a later run; the partial last batch and the
// evaluation batch take the winners of the training batch's shapes (tune keys are anchored to batch
// buckets), so they time nothing.

import { autotune, defaultAutotuneBudget, type TuneResult } from "../kernels/autotune.ts";
import { autotuneEnabled, clearPending } from "../kernels/planner.ts";
import { trainingStepPlan } from "../models/plan.ts";
import { runModelOptions, type RunSettings } from "./recipe.ts";

/** How often a long tuning says how far it is (the trainer's log may not be a terminal). */
const PROGRESS_EVERY_MS = 5000;

/** What the tuning of a run reads of its settings. */
export interface TuneSettings extends RunSettings {
  batchSize: number;
  /** Seconds autotune may spend (compiling included); default by adapter (kernels/autotune.ts). */
  autotuneBudget?: number;
}

const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : "no rival");

/** A winner that differs from the default, as the summary names it. */
function changed(t: TuneResult): string {
  return `${t.key} ${t.winner} (${
    t.runnerUp ? `+${pct(t.margin)} over ${t.runnerUp}` : "no rival"
  }; default ${t.fallback})`;
}

/**
 * Tunes the kernels of a training step of `settings` at its batch size (nothing when autotune is off).
 * `progress(done, total)` is told before the first shape and after each; `log` gets a start line, every
 * 5 s how far it is, each decision with its margin, and a summary: shapes tuned, left for later, and the
 * winners that differ from the defaults with their margins.
 */
export async function tuneRunKernels(
  settings: TuneSettings,
  seed: number,
  log: (line: string) => void,
  progress?: (done: number, total: number) => void,
): Promise<void> {
  if (!autotuneEnabled()) return;
  clearPending(); // shapes queued by another batch size of an earlier run: this run tunes its own step
  trainingStepPlan(settings.stage, runModelOptions(settings, seed), settings.batchSize);
  const budgetS = settings.autotuneBudget ?? defaultAutotuneBudget();
  const t0 = performance.now();
  let said = t0;
  const tell = (done: number, total: number) => {
    progress?.(done, total);
    const now = performance.now(), secs = (now - t0) / 1e3;
    if (done === 0 && total > 0) {
      log(
        `autotune: timing the kernel variants of ${total} shapes, largest first, within ${budgetS} s ` +
          `(--autotune-budget; winners are cached for later runs)`,
      );
    } else if (done < total && now - said >= PROGRESS_EVERY_MS) {
      const left = Math.round(
        Math.min((secs / Math.max(done, 1)) * (total - done), Math.max(0, budgetS - secs)),
      );
      log(`autotune: ${done}/${total} shapes in ${secs.toFixed(0)} s, about ${left} s left`);
    } else return;
    said = now;
  };
  const report = await autotune({ progress: tell, log, budgetS });
  if (!report.queued) return;
  const differ = report.results.filter((t) => t.winner !== t.fallback);
  const later = report.left.length
    ? `${report.left.length} left for later runs (they run the defaults meanwhile)`
    : "none left for later";
  log(
    `autotune: tuned ${report.results.length} of ${report.queued} shapes in ${report.seconds.toFixed(1)} s` +
      `${
        report.timer ? ` (timer ${report.timer.method})` : ""
      }, ${later}; ${differ.length} differ from the defaults` +
      (differ.length ? `: ${differ.map(changed).join("; ")}` : ""),
  );
}
