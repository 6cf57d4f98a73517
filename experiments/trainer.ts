// One training run with the notebook's recipe: AdamW + cosine schedule, per-epoch evaluation,
// CSV/JSON results, a checkpoint after every epoch (and when asked to stop), resume (falling back to
// the previous checkpoint when the last one is damaged), a NaN guard, and a clear stop when the
// WebGPU device is lost.
//
// The step, the evaluation, the recipe and the checkpoint bytes are the training core (training/);
// this file orchestrates them over files: `trainRun` opens the run (model, optimizer, schedule, metric
// sums), resumes it from its checkpoint when asked, and for every epoch trains it (`trainEpoch`),
// evaluates it (`evaluateEpoch`) and records it (`recordEpoch`: the log line, the CSV, the checkpoints
// and the summary). A training step records forward, backward, AdamW and the metric sums into one
// command encoder and never waits on the GPU; the metric sums are read back every `progressEvery`
// steps and at the end of the epoch.

import { gpu } from "../kernels/runtime.ts";
import type { AdamW, CosineAnnealingLR } from "../nn/optim.ts";
import type { StochasticDepth } from "../nn/layers.ts";
import type { Model } from "../models/zoo.ts";
import { GpuMetrics, type MetricSums } from "../training/metrics.ts";
import { StepPacer, trainStep } from "../training/step.ts";
import { tuneRunKernels } from "../training/tune.ts";
import { compileRunKernels } from "../training/compile.ts";
import { type BatchSource, evaluate, evaluateAccuracy } from "../training/evaluate.ts";
import { buildRunModel, evaluationMode, makeOptimizer, stochasticDepthModules } from "../training/recipe.ts";
import type { TrainConfig } from "./config.ts";
import { heartbeat, Phase, type PhaseOptions, Progress } from "./progress.ts";
import { csvText, type EpochRow, reportedAccuracy, runPaths, type RunSummary } from "./results.ts";
import { removeStaleTemps, writeFileAtomic } from "./files.ts";
import {
  loadTrainingCheckpoint,
  previousCheckpoint,
  saveTrainingCheckpoint,
  type TrainingState,
} from "./checkpoint.ts";

export type { BatchSource } from "../training/evaluate.ts";
export { buildRunModel, evaluate };

export interface Loaders {
  train: BatchSource;
  validation: BatchSource;
  test: BatchSource;
}

export interface RunOptions {
  run: number;
  loaders: Loaders;
  resume: boolean;
  /** Returns true once asked to stop (Ctrl-C, SIGTERM, SIGHUP): the run checkpoints and returns. */
  stopRequested?: () => boolean;
  log?: (line: string) => void;
  /**
   * Report the long phases (autotune, compile, training steps, evaluation, checkpoints) on stderr: a
   * redrawn bar on a terminal, a line every 5 s otherwise (default true; false: silent).
   */
  progress?: boolean;
}

export interface RunResult {
  /** The summary this call wrote last (run<k>.json), or null when no epoch ended in this call. */
  summary: RunSummary | null;
  rows: EpochRow[];
  /** false when the run stopped early (asked to stop) and can be resumed. */
  complete: boolean;
}

/**
 * Why `device` was lost, or null when it is still there. Called after an error: the lost promise may
 * settle a moment after the call that failed (e.g. a readback on a destroyed device), so it waits a
 * little for it.
 */
async function deviceLost(device: GPUDevice, waitMs = 1000): Promise<string | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const info = await Promise.race([
    device.lost,
    new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), waitMs)),
  ]);
  clearTimeout(timer);
  return info ? `WebGPU device lost (${info.reason}): ${info.message}` : null;
}

/** A run being trained: its parts, its results so far, and where it is. */
interface Run {
  cfg: TrainConfig;
  opts: RunOptions;
  log: (line: string) => void;
  paths: ReturnType<typeof runPaths>;
  seed: number;
  model: Model;
  optimizer: AdamW;
  scheduler: CosineAnnealingLR;
  drops: StochasticDepth[];
  metrics: GpuMetrics;
  rows: EpochRow[];
  /** The summary written last, or null. */
  summary: RunSummary | null;
  /** Where the run is and what the last checkpoint holds, for the message when the device is lost. */
  at: string;
  saved: string | null;
}

/** Where an epoch starts: its index, the steps already taken in it and their metric sums and seconds. */
type Position = Pick<TrainingState, "epoch" | "batch" | "partial">;

const NO_PARTIAL: TrainingState["partial"] = { lossSum: 0, correct: 0, count: 0, seconds: 0 };

/** Trains one run; see the file header. */
export async function trainRun(cfg: TrainConfig, opts: RunOptions): Promise<RunResult> {
  const device = gpu().device;
  const run = await openRun(cfg, opts);
  const start = opts.resume ? await resume(run) : { epoch: 0, batch: 0, partial: NO_PARTIAL };
  run.at = `epoch ${start.epoch + 1}`;
  run.saved = start.batch
    ? `step ${start.batch} of epoch ${start.epoch + 1}`
    : start.epoch
    ? `end of epoch ${start.epoch}`
    : null;
  let stopped = false, failure: unknown = null;
  try {
    for (let epoch = start.epoch; epoch < cfg.epochs && !stopped; epoch++) {
      const trained = await trainEpoch(
        run,
        epoch === start.epoch ? start : { epoch, batch: 0, partial: NO_PARTIAL },
      );
      if (trained.stopped) {
        await checkpointMidEpoch(run, trained);
        stopped = true;
        break;
      }
      const row = await evaluateEpoch(run, trained);
      await recordEpoch(run, row, trained.sums.count / trained.seconds);
      if (opts.stopRequested?.()) {
        stopped = epoch + 1 < cfg.epochs;
        if (stopped) run.log(`stopped after epoch ${epoch + 1}: continue with --resume`);
      }
    }
  } catch (e) {
    failure = await explainFailure(run, device, e);
  }
  try {
    run.metrics.dispose();
    run.model.dispose();
    run.optimizer.dispose();
  } catch (e) {
    failure ??= e; // after a failure (a lost device) freeing can fail too: report the first error
  }
  if (failure) throw failure;
  return { summary: run.summary, rows: run.rows, complete: !stopped };
}

/** Options of the run's phases: silent with `progress: false`; their summaries go to the run's log. */
function phaseOptions(opts: RunOptions, log: (line: string) => void, more: PhaseOptions = {}): PhaseOptions {
  return { quiet: opts.progress === false, log, ...more };
}

/** Autotune's "k/N shapes, about S s left" lines, which the phase's own bar or lines replace. */
const TUNE_PROGRESS_LINE = /^autotune: \d+\/\d+ shapes in /;

/**
 * Tunes (when autotune is on), then compiles every kernel of the run's step and evaluation before the
 * first step, each behind a phase: "autotune k/N shapes", "compiling k/N kernels". Says nothing of a
 * phase with nothing to do.
 */
async function prepareKernels(
  cfg: TrainConfig,
  seed: number,
  opts: RunOptions,
  log: (line: string) => void,
): Promise<void> {
  let tune: Phase | null = null;
  const tuneLog = (line: string) => {
    if (tune && TUNE_PROGRESS_LINE.test(line)) return;
    if (tune) tune.log(line);
    else log(line);
  };
  try {
    await tuneRunKernels(cfg, seed, tuneLog, (done, total) => {
      if (!tune && total > 0) {
        tune = new Phase("autotune", total, phaseOptions(opts, log, { unit: "shapes" }));
      }
      tune?.update(done);
    });
  } finally {
    (tune as Phase | null)?.end();
  }
  let compile: Phase | null = null;
  try {
    await compileRunKernels(cfg, seed, (done, total) => {
      if (!compile && total > 0) {
        compile = new Phase(
          `compiling ${total} kernels`,
          total,
          phaseOptions(opts, log, { unit: "kernels" }),
        );
      }
      compile?.update(done);
    });
  } catch (e) {
    (compile as Phase | null)?.end();
    throw e;
  }
  const c = compile as Phase | null;
  c?.end(`compiled ${c.total} kernels in ${c.seconds.toFixed(1)} s`);
}

/** Builds the run's parts (after tuning and compiling the kernels of its step). */
async function openRun(cfg: TrainConfig, opts: RunOptions): Promise<Run> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const seed = cfg.seed + opts.run;
  await prepareKernels(cfg, seed, opts, log);
  const model = buildRunModel(cfg, seed);
  const { optimizer, scheduler } = makeOptimizer(model, cfg);
  return {
    cfg,
    opts,
    log,
    paths: runPaths(cfg.out, opts.run),
    seed,
    model,
    optimizer,
    scheduler,
    drops: stochasticDepthModules(model),
    metrics: new GpuMetrics(),
    rows: [],
    summary: null,
    at: "",
    saved: null,
  };
}

/**
 * Restores the run from its checkpoint (or the previous one, when the last is damaged), after removing
 * the temporary files an interrupted write left, and returns where it continues.
 */
async function resume(run: Run): Promise<Position> {
  const { paths, log } = run;
  const files = [
    paths.checkpoint,
    previousCheckpoint(paths.checkpoint),
    paths.best,
    paths.csv,
    paths.summary,
  ];
  const stale = (await Promise.all(files.map(removeStaleTemps))).flat();
  if (stale.length) {
    log(`removed ${stale.length} temporary file(s) left by an interrupted write: ${stale.join(", ")}`);
  }
  const st = await heartbeat(
    `reading the checkpoint ${paths.checkpoint}`,
    () => loadTrainingCheckpoint(paths.checkpoint, run.model, run.optimizer, run.cfg, log),
    phaseOptions(run.opts, log),
  );
  if (!st) {
    log(`no checkpoint at ${paths.checkpoint}: starting run ${run.opts.run} from scratch`);
    return { epoch: 0, batch: 0, partial: NO_PARTIAL };
  }
  run.rows = st.rows;
  run.scheduler.loadStateDict(st.scheduler);
  st.dropRng.forEach((s, i) => run.drops[i]?.rng.setState(s));
  log(`resuming run ${run.opts.run} of ${run.cfg.stage} at epoch ${st.epoch + 1}, step ${st.batch}`);
  return { epoch: st.epoch, batch: st.batch, partial: st.partial };
}

/** The checkpoint state of the run at `epoch`, `batch` steps in, with those steps' metric sums. */
function checkpointState(
  run: Run,
  epoch: number,
  batch: number,
  partial: TrainingState["partial"],
): TrainingState {
  return {
    epoch,
    batch,
    partial,
    rows: run.rows,
    scheduler: run.scheduler.stateDict(),
    dropRng: run.drops.map((d) => d.rng.getState()),
  };
}

/** An epoch's training passes: its metric sums, seconds, and whether a stop request ended it early. */
interface Trained {
  epoch: number;
  steps: number;
  sums: MetricSums;
  /** The epoch's time so far, including the seconds of the steps taken before a resume. */
  seconds: number;
  /** When this call started the epoch (performance.now()), and the seconds carried from before. */
  t0: number;
  carriedSeconds: number;
  /** The learning rate of the epoch. */
  lr: number;
  stopped: boolean;
}

/**
 * The training passes of one epoch from `from` (a resumed epoch continues at its step, with its metric
 * sums): one step recorded per batch, at most one queued behind the one running, the progress bar from
 * the metric sums every `progressEvery` steps. Stops after a step when asked to; throws when the loss
 * is no longer finite.
 */
async function trainEpoch(run: Run, from: Position): Promise<Trained> {
  const { cfg, opts, model, optimizer, metrics } = run;
  const { train } = opts.loaders;
  const epoch = from.epoch;
  run.at = `epoch ${epoch + 1}`;
  const t0 = performance.now();
  const lr = optimizer.lr;
  model.train();
  if (from.batch > 0) metrics.load(from.partial);
  else metrics.reset();
  // the bar moves after every step (the step before it has finished); the loss is read back only every
  // `progressEvery` steps
  const bar = opts.progress === false
    ? null
    : new Progress(`epoch ${epoch + 1}/${cfg.epochs}`, train.batchesPerEpoch, { log: run.log });
  let steps = from.batch, images = 0, stopped = false, loss = "";
  bar?.steps(steps, images);
  const pacer = new StepPacer();
  for (const batch of train.epoch(epoch, { startBatch: from.batch })) {
    trainStep({ model, optimizer, metrics }, batch);
    batch.x.dispose();
    batch.y.dispose();
    steps++;
    images += batch.size;
    await pacer.stepped();
    if (bar && (steps % cfg.progressEvery === 0 || steps === train.batchesPerEpoch)) {
      const m = await metrics.read();
      const l = m.lossSum / Math.max(m.count, 1);
      if (!Number.isFinite(m.lossSum)) break;
      loss = `loss ${l.toFixed(4)}`;
    }
    bar?.steps(steps, images, loss);
    if (opts.stopRequested?.() && steps < train.batchesPerEpoch) {
      stopped = true;
      break;
    }
  }
  await pacer.drain();
  bar?.end();
  const sums = await metrics.read();
  const carriedSeconds = from.partial.seconds;
  const seconds = carriedSeconds + (performance.now() - t0) / 1000;
  if (!Number.isFinite(sums.lossSum)) {
    throw new Error(
      `Training diverged: the loss became ${sums.lossSum} in epoch ${
        epoch + 1
      } of run ${opts.run} (${cfg.stage}). ` +
        `The last good checkpoint (end of epoch ${epoch}) is kept at ${run.paths.checkpoint}; ` +
        `try a lower --lr.`,
    );
  }
  return { epoch, steps, sums, seconds, t0, carriedSeconds, lr, stopped };
}

/** Checkpoints an epoch stopped part-way (asked to stop), so --resume continues at its next step. */
async function checkpointMidEpoch(run: Run, t: Trained): Promise<void> {
  const { paths } = run;
  const state = checkpointState(run, t.epoch, t.steps, { ...t.sums, seconds: t.seconds });
  await heartbeat(`writing the checkpoint`, async () => {
    await saveTrainingCheckpoint(paths.checkpoint, run.model, run.optimizer, run.cfg, state, {
      keepPrevious: true,
    });
  }, phaseOptions(run.opts, run.log));
  run.log(
    `stopped at epoch ${
      t.epoch + 1
    }, step ${t.steps}: checkpoint written to ${paths.checkpoint}; continue with --resume`,
  );
}

/**
 * The epoch's row: training accuracy (from the training passes, or re-scored with --rescore-train),
 * validation and test accuracy in the protocol's mode; then the schedule steps.
 */
async function evaluateEpoch(run: Run, t: Trained): Promise<EpochRow> {
  const { cfg, model } = run;
  const { train, validation, test } = run.opts.loaders;
  const { lossSum, correct, count } = t.sums;
  // notebook: evaluation in training mode (batch statistics); clean: eval mode
  evaluationMode(model, cfg.protocol);
  const at = `epoch ${t.epoch + 1}/${cfg.epochs}`;
  const trainAcc = cfg.rescoreTrain
    ? await evaluatePhase(run, `${at}: scoring the training set`, train, t.epoch)
    : correct / count;
  const valAcc = await evaluatePhase(run, `${at}: validation`, validation, t.epoch);
  const testAcc = await evaluatePhase(run, `${at}: test`, test, t.epoch);
  const seconds = (performance.now() - t.t0) / 1000 + t.carriedSeconds;
  run.scheduler.step();
  return {
    epoch: t.epoch + 1,
    loss: lossSum / count,
    Train: trainAcc,
    Validation: valAcc,
    Test: testAcc,
    lr: t.lr,
    seconds,
  };
}

/**
 * The accuracy of the run's model over `source` (as `evaluate`), behind a phase counting images (one
 * batch kept queued behind the one running, so the count follows the GPU). Silent when it is quick.
 */
async function evaluatePhase(run: Run, label: string, source: BatchSource, epoch: number): Promise<number> {
  const phase = new Phase(
    label,
    source.count,
    phaseOptions(run.opts, run.log, { unit: "images", quietMs: 1000 }),
  );
  const pacer = new StepPacer();
  let images = 0;
  try {
    const r = await evaluateAccuracy(run.model, source, run.metrics, {
      epoch,
      onBatch: async (batch) => {
        await pacer.stepped();
        images += batch.size;
        phase.update(images);
      },
    });
    await pacer.drain();
    return r.accuracy;
  } finally {
    phase.end();
  }
}

/**
 * Records an epoch: its log line, the CSV, the checkpoint (the one before kept as the previous), the
 * best model when this epoch is the one the run reports, and the summary.
 */
async function recordEpoch(run: Run, row: EpochRow, imagesPerSecond: number): Promise<void> {
  const { cfg, paths, rows } = run;
  rows.push(row);
  run.log(
    `epoch ${row.epoch}/${cfg.epochs}  loss ${row.loss.toFixed(4)}  train ${
      (row.Train * 100).toFixed(2)
    }%  ` +
      `val ${(row.Validation * 100).toFixed(2)}%  test ${(row.Test * 100).toFixed(2)}%  lr ${
        row.lr.toExponential(3)
      }  ` +
      `${row.seconds.toFixed(1)} s  ${imagesPerSecond.toFixed(1)} img/s`,
  );
  const rep = reportedAccuracy(rows, cfg.protocol);
  await writeFileAtomic(paths.csv, csvText(rows));
  const endOfEpoch = checkpointState(run, row.epoch, 0, NO_PARTIAL);
  await heartbeat(`epoch ${row.epoch}/${cfg.epochs}: writing the checkpoints`, async () => {
    await saveTrainingCheckpoint(paths.checkpoint, run.model, run.optimizer, cfg, endOfEpoch, {
      keepPrevious: true,
    });
    run.saved = `end of epoch ${row.epoch}`;
    if (rep.epoch === row.epoch) await saveTrainingCheckpoint(paths.best, run.model, null, cfg, endOfEpoch);
  }, phaseOptions(run.opts, run.log));
  run.summary = runSummary(run, row.epoch === cfg.epochs, imagesPerSecond);
  await writeFileAtomic(paths.summary, JSON.stringify(run.summary, null, 2) + "\n");
}

/** The run's summary (run<k>.json) from its rows so far. */
function runSummary(run: Run, complete: boolean, imagesPerSecond: number): RunSummary {
  const { cfg, rows } = run;
  return {
    stage: cfg.stage,
    run: run.opts.run,
    seed: run.seed,
    protocol: cfg.protocol,
    config: cfg,
    data: cfg.synthetic ? "synthetic" : "cifar10",
    adapter: gpu().adapterName,
    parameters: run.model.numParameters(),
    epochsCompleted: rows.length,
    complete,
    bestTest: Math.max(...rows.map((r) => r.Test)),
    bestValidation: Math.max(...rows.map((r) => r.Validation)),
    reported: reportedAccuracy(rows, cfg.protocol),
    totalSeconds: rows.reduce((a, r) => a + r.seconds, 0),
    imagesPerSecond,
  };
}

/** The error to report for `e`: when the device was lost, one saying where the run stopped and what
 * is kept. */
async function explainFailure(run: Run, device: GPUDevice, e: unknown): Promise<unknown> {
  const lost = await deviceLost(device);
  if (!lost) return e;
  return new Error(
    `${lost}: run ${run.opts.run} (${run.cfg.stage}) stopped in ${run.at}. ` +
      (run.saved
        ? `The last checkpoint (${run.saved}) is intact in ${run.paths.checkpoint}: `
        : `No checkpoint was written yet: `) +
      `continue with --resume once the GPU is available again.`,
    { cause: e },
  );
}
