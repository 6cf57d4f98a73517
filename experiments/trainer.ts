// One training run with the notebook's recipe: AdamW + cosine schedule, per-epoch evaluation,
// CSV/JSON results, a checkpoint after every epoch (and when asked to stop), resume (falling back to
// the previous checkpoint when the last one is damaged), a NaN guard, and a clear stop when the
// WebGPU device is lost.
//
// A training step records forward, backward, AdamW and the metric sums into one command encoder and
// never waits on the GPU; the metric sums are read back every `progressEvery` steps and at the end
// of the epoch.

import { keep, noGrad, scope, type Tensor, zeros } from "../autograd/tensor.ts";
import { crossEntropy } from "../autograd/ops/loss.ts";
import { accumulateMetrics, METRIC_SLOTS } from "../kernels/metrics.ts";
import { clear, gpu, sync, upload } from "../kernels/runtime.ts";
import { StochasticDepth } from "../nn/layers.ts";
import { AdamW, CosineAnnealingLR } from "../nn/optim.ts";
import type { Batch } from "../data/loader.ts";
import { buildModel, type Model, type ModelOptions } from "../models/zoo.ts";
import { trainingStepPlan } from "../models/plan.ts";
import { autotune } from "../kernels/autotune.ts";
import { autotuneEnabled } from "../kernels/planner.ts";
import type { TrainConfig } from "./config.ts";
import { Progress } from "./progress.ts";
import { csvText, type EpochRow, reportedAccuracy, runPaths, type RunSummary } from "./results.ts";
import { removeStaleTemps, writeFileAtomic } from "./files.ts";
import {
  loadTrainingCheckpoint,
  previousCheckpoint,
  saveTrainingCheckpoint,
  type TrainingState,
} from "./checkpoint.ts";

/** What the trainer needs of a data loader (CifarLoader is one). */
export interface BatchSource {
  readonly count: number;
  readonly batchesPerEpoch: number;
  epoch(e: number, opts?: { startBatch?: number }): Iterable<Batch>;
}

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
  /** Draw a progress bar (default true). */
  progress?: boolean;
}

export interface RunResult {
  summary: RunSummary;
  rows: EpochRow[];
  /** false when the run stopped early (asked to stop) and can be resumed. */
  complete: boolean;
}

/** Sums of loss·batch, correct predictions and images, kept on the GPU. */
class GpuMetrics {
  readonly sums = keep(zeros([METRIC_SLOTS]));
  reset(): void {
    const s = this.sums.storage;
    clear(s.buffer, s.offset, METRIC_SLOTS * 4);
  }
  /** Restores sums read back earlier (exact f32 values, so accumulation continues bit for bit). */
  load(m: { lossSum: number; correct: number; count: number }): void {
    const s = this.sums.storage;
    upload(s.buffer, Float32Array.of(m.lossSum, m.correct, m.count, 0), s.offset);
  }
  add(out: Tensor, y: Tensor, loss: Tensor | null): void {
    accumulateMetrics(
      out.binding(),
      y.binding(),
      loss ? loss.binding() : null,
      this.sums.binding(),
      out.shape[0],
      out.shape[1],
    );
  }
  async read(): Promise<{ lossSum: number; correct: number; count: number }> {
    const [lossSum, correct, count] = await this.sums.toArray();
    return { lossSum, correct, count };
  }
  dispose(): void {
    this.sums.dispose();
  }
}

/** Accuracy of `model` over every batch of `loader`, with one readback at the end. */
export async function evaluate(
  model: Model,
  loader: BatchSource,
  metrics: GpuMetrics,
  epoch = 0,
): Promise<number> {
  metrics.reset();
  for (const batch of loader.epoch(epoch)) {
    noGrad(() => scope(() => metrics.add(model.forward(batch.x), batch.y, null)));
    batch.x.dispose();
    batch.y.dispose();
  }
  const { correct, count } = await metrics.read();
  return count ? correct / count : NaN;
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

function stochasticDepthModules(model: Model): StochasticDepth[] {
  return model.namedModules().map(([, m]) => m).filter((m): m is StochasticDepth =>
    m instanceof StochasticDepth
  );
}

/** The model options of a run. */
function runModelOptions(cfg: TrainConfig, seed: number): ModelOptions {
  return {
    widths: cfg.widths,
    depths: cfg.depths,
    stemFeatures: cfg.stemFeatures,
    dropPath: cfg.dropPath,
    softmaxHead: cfg.protocol === "notebook" ? undefined : false,
    seed,
  };
}

export function buildRunModel(cfg: TrainConfig, seed: number): Model {
  return buildModel(cfg.stage, runModelOptions(cfg, seed));
}

/**
 * With autotune on: meets every conv and matmul shape of a training step in a dry run of the model built
 * on meta (no GPU work, the run's model and generators untouched) and times the competing variants of
 * those without a cached winner, so every step of the run, resumed or not, uses the same kernels.
 */
async function tuneKernels(cfg: TrainConfig, seed: number, log: (s: string) => void): Promise<void> {
  if (!autotuneEnabled()) return;
  trainingStepPlan(cfg.stage, runModelOptions(cfg, seed), cfg.batchSize);
  const t0 = performance.now();
  const tuned = await autotune();
  if (tuned.length) {
    const changed = tuned.filter((t) => t.winner !== t.fallback).length;
    log(
      `autotune: timed the kernel variants of ${tuned.length} shapes in ${
        ((performance.now() - t0) / 1e3).toFixed(1)
      } s (${changed} differ from the defaults)`,
    );
  }
}

/** Trains one run; see the file header. */
export async function trainRun(cfg: TrainConfig, opts: RunOptions): Promise<RunResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const paths = runPaths(cfg.out, opts.run);
  const device = gpu().device;
  const seed = cfg.seed + opts.run;
  await tuneKernels(cfg, seed, log);
  const model = buildRunModel(cfg, seed);
  const optimizer = new AdamW(model.parameters(), {
    lr: cfg.lr,
    betas: [0.9, 0.999],
    eps: 1e-8,
    weightDecay: cfg.weightDecay,
  });
  const scheduler = new CosineAnnealingLR(optimizer, { tMax: cfg.epochs });
  const drops = stochasticDepthModules(model);
  const metrics = new GpuMetrics();
  const { train, validation, test } = opts.loaders;

  let rows: EpochRow[] = [];
  let startEpoch = 0, startBatch = 0, carried = { lossSum: 0, correct: 0, count: 0, seconds: 0 };
  if (opts.resume) {
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
    const st = await loadTrainingCheckpoint(paths.checkpoint, model, optimizer, cfg, log);
    if (st) {
      rows = st.rows;
      startEpoch = st.epoch;
      startBatch = st.batch;
      carried = st.partial;
      scheduler.loadStateDict(st.scheduler);
      st.dropRng.forEach((s, i) => drops[i]?.rng.setState(s));
      log(`resuming run ${opts.run} of ${cfg.stage} at epoch ${startEpoch + 1}, step ${startBatch}`);
    } else {
      log(`no checkpoint at ${paths.checkpoint}: starting run ${opts.run} from scratch`);
    }
  }

  const state = (epoch: number, batch: number, partial: TrainingState["partial"]): TrainingState => ({
    epoch,
    batch,
    partial,
    rows,
    scheduler: scheduler.stateDict(),
    dropRng: drops.map((d) => d.rng.getState()),
  });

  let stopped = false, failure: unknown = null;
  // where the run is, and what the last checkpoint holds, for the message when the device is lost
  let at = `epoch ${startEpoch + 1}`;
  let saved = startBatch
    ? `step ${startBatch} of epoch ${startEpoch + 1}`
    : startEpoch
    ? `end of epoch ${startEpoch}`
    : null;
  try {
    for (let epoch = startEpoch; epoch < cfg.epochs && !stopped; epoch++) {
      at = `epoch ${epoch + 1}`;
      const t0 = performance.now();
      const lr = optimizer.lr;
      model.train();
      const firstBatch = epoch === startEpoch ? startBatch : 0;
      const carriedSeconds = epoch === startEpoch ? carried.seconds : 0;
      if (firstBatch > 0) metrics.load(carried);
      else metrics.reset();
      const bar = opts.progress === false
        ? null
        : new Progress(`epoch ${epoch + 1}/${cfg.epochs}`, train.batchesPerEpoch);
      let steps = firstBatch, images = 0, inFlight: Promise<void> | null = null;
      for (const batch of train.epoch(epoch, { startBatch: firstBatch })) {
        scope(() => {
          const out = model.forward(batch.x);
          const loss = crossEntropy(out, batch.y);
          optimizer.zeroGrad();
          loss.backward();
          optimizer.step();
          metrics.add(out, batch.y, loss);
        });
        batch.x.dispose();
        batch.y.dispose();
        steps++;
        images += batch.size;
        // keep at most one step queued behind the one running, so the host never runs far ahead
        const done = sync();
        done.catch(() => {}); // awaited below; if the wait before it throws, it must not go unhandled
        if (inFlight) await inFlight;
        inFlight = done;
        if (bar && (steps % cfg.progressEvery === 0 || steps === train.batchesPerEpoch)) {
          const m = await metrics.read();
          const l = m.lossSum / Math.max(m.count, 1);
          if (!Number.isFinite(m.lossSum)) break;
          bar.update(steps, images, `loss ${l.toFixed(4)}`);
        }
        if (opts.stopRequested?.() && steps < train.batchesPerEpoch) {
          stopped = true;
          break;
        }
      }
      if (inFlight) await inFlight;
      bar?.done();
      const { lossSum, count, correct } = await metrics.read();
      const seconds = carriedSeconds + (performance.now() - t0) / 1000;
      if (!Number.isFinite(lossSum)) {
        throw new Error(
          `Training diverged: the loss became ${lossSum} in epoch ${
            epoch + 1
          } of run ${opts.run} (${cfg.stage}). ` +
            `The last good checkpoint (end of epoch ${epoch}) is kept at ${paths.checkpoint}; ` +
            `try a lower --lr.`,
        );
      }
      if (stopped) {
        await saveTrainingCheckpoint(
          paths.checkpoint,
          model,
          optimizer,
          cfg,
          state(epoch, steps, { lossSum, correct, count, seconds }),
          { keepPrevious: true },
        );
        log(
          `stopped at epoch ${
            epoch + 1
          }, step ${steps}: checkpoint written to ${paths.checkpoint}; continue with --resume`,
        );
        break;
      }
      // notebook: evaluation in training mode (batch statistics); clean: eval mode
      if (cfg.protocol === "clean") model.eval();
      const trainAcc = cfg.rescoreTrain ? await evaluate(model, train, metrics, epoch) : correct / count;
      const valAcc = await evaluate(model, validation, metrics, epoch);
      const testAcc = await evaluate(model, test, metrics, epoch);
      const evalSeconds = (performance.now() - t0) / 1000 + carriedSeconds;
      scheduler.step();
      const row: EpochRow = {
        epoch: epoch + 1,
        loss: lossSum / count,
        Train: trainAcc,
        Validation: valAcc,
        Test: testAcc,
        lr,
        seconds: evalSeconds,
      };
      rows.push(row);
      const imgPerSec = count / seconds;
      log(
        `epoch ${row.epoch}/${cfg.epochs}  loss ${row.loss.toFixed(4)}  train ${
          (trainAcc * 100).toFixed(2)
        }%  ` +
          `val ${(valAcc * 100).toFixed(2)}%  test ${(testAcc * 100).toFixed(2)}%  lr ${
            lr.toExponential(3)
          }  ` +
          `${evalSeconds.toFixed(1)} s  ${imgPerSec.toFixed(1)} img/s`,
      );
      const rep = reportedAccuracy(rows, cfg.protocol);
      await writeFileAtomic(paths.csv, csvText(rows));
      const endOfEpoch = state(epoch + 1, 0, { lossSum: 0, correct: 0, count: 0, seconds: 0 });
      await saveTrainingCheckpoint(paths.checkpoint, model, optimizer, cfg, endOfEpoch, {
        keepPrevious: true,
      });
      saved = `end of epoch ${epoch + 1}`;
      if (rep.epoch === row.epoch) await saveTrainingCheckpoint(paths.best, model, null, cfg, endOfEpoch);
      await writeSummary(cfg, opts.run, seed, rows, model, epoch + 1 === cfg.epochs, imgPerSec);
      if (opts.stopRequested?.()) {
        stopped = epoch + 1 < cfg.epochs;
        if (stopped) log(`stopped after epoch ${epoch + 1}: continue with --resume`);
      }
    }
  } catch (e) {
    const lost = await deviceLost(device);
    failure = !lost ? e : new Error(
      `${lost}: run ${opts.run} (${cfg.stage}) stopped in ${at}. ` +
        (saved
          ? `The last checkpoint (${saved}) is intact in ${paths.checkpoint}: `
          : `No checkpoint was written yet: `) +
        `continue with --resume once the GPU is available again.`,
      { cause: e },
    );
  }
  try {
    metrics.dispose();
    model.dispose();
    optimizer.dispose();
  } catch (e) {
    failure ??= e; // after a failure (a lost device) freeing can fail too: report the first error
  }
  if (failure) throw failure;
  const summary = JSON.parse(await Deno.readTextFile(paths.summary).catch(() => "null")) as RunSummary | null;
  return { summary: summary!, rows, complete: !stopped };
}

async function writeSummary(
  cfg: TrainConfig,
  run: number,
  seed: number,
  rows: EpochRow[],
  model: Model,
  complete: boolean,
  imagesPerSecond: number,
): Promise<void> {
  const paths = runPaths(cfg.out, run);
  const summary: RunSummary = {
    stage: cfg.stage,
    run,
    seed,
    protocol: cfg.protocol,
    config: cfg,
    adapter: gpu().adapterName,
    parameters: model.numParameters(),
    epochsCompleted: rows.length,
    complete,
    bestTest: Math.max(...rows.map((r) => r.Test)),
    bestValidation: Math.max(...rows.map((r) => r.Validation)),
    reported: reportedAccuracy(rows, cfg.protocol),
    totalSeconds: rows.reduce((a, r) => a + r.seconds, 0),
    imagesPerSecond,
  };
  await writeFileAtomic(paths.summary, JSON.stringify(summary, null, 2) + "\n");
}
