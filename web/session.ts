// What the page trains and evaluates, without the DOM: the trainer's recipe, step, evaluation and
// checkpoint bytes (training/: AdamW, cosine schedule per epoch, cross-entropy, the notebook's or the
// clean protocol) over batches the loader builds on the GPU, with pause/resume between steps, a test-set
// evaluation, and checkpoints as safetensors bytes in the format `deno task train` writes (so `deno task
// eval` and PyTorch read the page's downloads).

import * as E from "./engine.ts";
import type { TrainConfig } from "../experiments/config.ts";

export type State =
  | "idle"
  | "loading"
  | "compiling"
  | "training"
  | "evaluating"
  | "paused"
  | "done"
  | "error";

/** What a long phase has done so far: `done` of `total` `unit`, and what it is on (a file name). */
export interface PhaseProgress {
  done: number;
  total: number;
  unit: string;
  detail?: string;
}

/** `globalThis.demo.status`: what automation reads. Unknown numbers are null. */
export interface Status {
  state: State;
  /** How far the state's phase is (loading, compiling, training, evaluating), or null. */
  progress: PhaseProgress | null;
  /** Seconds from Start to the end of the first training step of the last run, or null before it. */
  firstStepSeconds: number | null;
  epoch: number;
  step: number;
  loss: number | null;
  trainAccuracy: number | null;
  testAccuracy: number | null;
  imagesPerSec: number | null;
}

/** The page's settings (the form). 0 images = all. */
export interface PageConfig {
  stage: E.Stage;
  widths?: number[];
  depths?: number[];
  stemFeatures?: number;
  batchSize: number;
  epochs: number;
  lr: number;
  weightDecay: number;
  trainImages: number;
  testImages: number;
  seed: number;
  protocol: "notebook" | "clean";
}

export interface Evaluation {
  accuracy: number;
  images: number;
  perClass: { correct: number; total: number }[];
  /** The first images of the test set with their predictions. */
  samples: { image: Uint8Array; label: number; predicted: number }[];
}

export interface Events {
  status(s: Status): void;
  stepDone(step: number, loss: number, accuracy: number): void;
  epochDone(step: number, row: { epoch: number; loss: number; train: number; test: number }): void;
  evaluated(e: Evaluation): void;
  log(msg: string): void;
}

type Data = { train: E.CifarSet; test: E.CifarSet };

/**
 * The page's banner: what the run is doing and how far it is, from the status alone (one state
 * machine: the banner cannot lag behind the state).
 */
export function phaseText(s: Status): string {
  const p = s.progress;
  const of = p ? ` ${p.done}/${p.total} ${p.unit}` : "";
  switch (s.state) {
    case "loading":
      return `loading CIFAR-10${p ? `${of}${p.detail ? ` (${p.detail})` : ""}` : ""}…`;
    case "compiling":
      return `compiling ${p?.total ?? ""} kernels${p ? ` ${p.done}/${p.total}` : ""}…`.replace("  ", " ");
    case "training":
      return `training: epoch ${s.epoch},${of}` +
        (s.firstStepSeconds === null ? "" : ` (first step ${s.firstStepSeconds.toFixed(1)} s after Start)`);
    case "evaluating":
      return `evaluating on the test set:${of}`;
    case "paused":
      return `paused at step ${s.step}: Resume continues`;
    case "done":
      return s.firstStepSeconds === null
        ? "done"
        : `done (first step ${s.firstStepSeconds.toFixed(1)} s after Start)`;
    case "error":
      return "stopped by an error";
    default:
      return "";
  }
}

/** The trainer's configuration for a page run (what a checkpoint's metadata carries). */
export function trainConfig(c: PageConfig): TrainConfig {
  return {
    stage: c.stage,
    epochs: c.epochs,
    batchSize: c.batchSize,
    lr: c.lr,
    weightDecay: c.weightDecay,
    seed: c.seed,
    trainLimit: c.trainImages,
    evalLimit: c.testImages,
    widths: c.widths,
    depths: c.depths,
    stemFeatures: c.stemFeatures,
    dropPath: 0,
    protocol: c.protocol,
    rescoreTrain: false,
    out: "",
    progressEvery: 1,
  };
}

function buildFor(c: PageConfig): E.Model {
  return E.buildRunModel(trainConfig(c), c.seed);
}

/** Throws a clear error when the model's largest activation at this batch size exceeds the adapter. */
export function checkLimits(c: PageConfig, limits: GPUSupportedLimits): void {
  const rows = E.onMeta(() => buildFor(c)).summary([c.batchSize, 3, 32, 32]);
  const biggest = Math.max(...rows.map((r) => 4 * r.outShape.reduce((a, b) => a * b, 1)));
  const limit = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  if (biggest > limit) {
    throw new Error(
      `This WebGPU adapter cannot hold the model: its largest activation at batch ${c.batchSize} needs ` +
        `${(biggest / 2 ** 20).toFixed(1)} MiB, the adapter offers maxStorageBufferBindingSize ` +
        `${(limits.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB and maxBufferSize ` +
        `${(limits.maxBufferSize / 2 ** 20).toFixed(0)} MiB. Lower the batch size or the widths.`,
    );
  }
}

const argmax = (a: Float32Array, row: number, n: number) => {
  let best = 0;
  for (let c = 1; c < n; c++) if (a[row * n + c] > a[row * n + best]) best = c;
  return best;
};

/** A loaded checkpoint: the model's tensors, and the optimizer and position when the file has them. */
interface Loaded {
  source: string;
  model: E.SafetensorsFile;
  optimizer: E.CheckpointParts["optimizer"];
  epoch: number;
  schedulerLastEpoch: number;
}

/** The status of a page before any run (and what a new run starts from). */
export function idleStatus(): Status {
  return {
    state: "idle",
    progress: null,
    firstStepSeconds: null,
    epoch: 0,
    step: 0,
    loss: null,
    trainAccuracy: null,
    testAccuracy: null,
    imagesPerSec: null,
  };
}

export class Session {
  status: Status = idleStatus();
  model: E.Model | null = null;
  private opt: E.AdamW | null = null;
  config: PageConfig | null = null;
  private loaded: Loaded | null = null;
  private resumeGate: (() => void) | null = null;
  private pauseRequested = false;
  private epochsDone = 0;
  /** When the last Start was pressed (performance.now()). */
  private startedAt = 0;
  /** The training phase's progress (steps of the run), restored after an evaluation or a pause. */
  private training: PhaseProgress | null = null;

  constructor(
    private readonly ev: Events,
    private readonly data: (
      trainImages: number,
      log?: (file: string, done: number, total: number) => void,
    ) => Promise<Data>,
  ) {}

  private set(patch: Partial<Status>): void {
    Object.assign(this.status, patch);
    this.ev.status({ ...this.status });
  }

  get busy(): boolean {
    return ["loading", "compiling", "training", "evaluating", "paused"].includes(this.status.state);
  }

  pause(): void {
    if (this.status.state === "training") this.pauseRequested = true;
  }

  resume(): void {
    if (this.status.state !== "paused") return;
    this.set({ state: "training", progress: this.training });
    this.resumeGate?.();
  }

  /** Trains with `c` (from a loaded checkpoint's weights when one was loaded) until done or error. */
  async train(c: PageConfig, ctx: E.GPUContext, startedAt = performance.now()): Promise<void> {
    if (this.busy) throw new Error("a run is already in progress");
    this.startedAt = startedAt;
    this.set({ ...idleStatus(), state: "loading" });
    this.pauseRequested = false;
    try {
      checkLimits(c, ctx.limits);
      const data = await this.data(
        c.trainImages,
        (file, done, total) =>
          this.set({ state: "loading", progress: { done, total, unit: "files", detail: file } }),
      );
      // every kernel of a step and of the evaluation, compiled together before the first step
      await E.compileRunKernels(trainConfig(c), c.seed, (done, total) => {
        if (total > 0) this.set({ state: "compiling", progress: { done, total, unit: "kernels" } });
      });
      this.replaceModel(c);
      const model = this.model!;
      const { optimizer: opt, scheduler: sched } = E.makeOptimizer(model, trainConfig(c));
      let startEpoch = 0;
      const l = this.loaded;
      if (l?.optimizer) {
        opt.loadStateDict(l.optimizer);
        for (let e = 0; e < l.schedulerLastEpoch; e++) sched.step();
        startEpoch = l.epoch;
        this.ev.log(`continuing ${l.source} at epoch ${startEpoch + 1} with its optimizer state`);
      }
      // the parameters live in the optimizer's arena: it is freed with the model (replaceModel)
      this.opt = opt;
      await this.loop(c, model, opt, sched, data, startEpoch);
      this.loaded = null;
      this.set({ state: "done", progress: null });
    } catch (e) {
      this.set({ state: "error", progress: null });
      throw e;
    }
  }

  private replaceModel(c: PageConfig): void {
    // as the trainer does: the model first, then the optimizer that holds its parameters' arena
    this.model?.dispose();
    this.model = null;
    this.opt?.dispose();
    this.opt = null;
    const model = buildFor(c);
    if (this.loaded) {
      try {
        E.loadModelPart(model, this.loaded.model, this.loaded.source);
      } catch (e) {
        model.dispose();
        throw e;
      }
    }
    this.model = model;
    this.config = c;
  }

  private async loop(
    c: PageConfig,
    model: E.Model,
    opt: E.AdamW,
    sched: E.CosineAnnealingLR,
    data: Data,
    startEpoch: number,
  ): Promise<void> {
    const splits = E.makeSplits(data, {
      trainLimit: c.trainImages || undefined,
      testLimit: c.testImages || undefined,
      validationLimit: 1,
    });
    const train = new E.CifarLoader(splits.train, {
      batchSize: c.batchSize,
      seed: c.seed,
      shuffle: true,
      augment: true,
    });
    // evaluation batches of the training batch size, as the trainer's (batch statistics in notebook mode)
    const test = new E.CifarLoader(splits.test, { batchSize: c.batchSize });
    let step = startEpoch * train.batchesPerEpoch;
    const totalSteps = c.epochs * train.batchesPerEpoch;
    // the metric sums of one step at a time: each step's loss and accuracy are read back while the
    // next step runs, and summed here for the epoch
    const metrics = new E.GpuMetrics();
    try {
      for (let epoch = startEpoch; epoch < c.epochs; epoch++) {
        model.train();
        this.training = { done: step, total: totalSteps, unit: "steps" };
        this.set({ state: "training", epoch: epoch + 1, progress: this.training });
        let lossSum = 0, correct = 0, count = 0, busyMs = 0, mark = performance.now();
        const handle = async (read: Promise<E.MetricSums>) => {
          const m = await read;
          const n = m.count, loss = m.lossSum / n, right = m.correct;
          if (!Number.isFinite(loss)) {
            throw new Error(
              `Training diverged: the loss became ${loss} at step ${step + 1}; try a lower learning rate.`,
            );
          }
          lossSum += loss * n, correct += right, count += n, step++;
          const now = performance.now();
          busyMs += now - mark;
          mark = now;
          this.training = { done: step, total: totalSteps, unit: "steps" };
          const first = this.status.firstStepSeconds ?? (now - this.startedAt) / 1000;
          this.set({
            step,
            loss,
            trainAccuracy: correct / count,
            imagesPerSec: count / (busyMs / 1000),
            progress: this.training,
            firstStepSeconds: first,
          });
          this.ev.stepDone(step, loss, right / n);
        };
        let pending: Promise<E.MetricSums> | null = null;
        for (const batch of train.epoch(epoch)) {
          if (this.pauseRequested) {
            if (pending) await handle(pending);
            pending = null;
            await this.paused();
            mark = performance.now();
          }
          metrics.reset();
          E.trainStep({ model, optimizer: opt, metrics }, batch);
          batch.x.dispose();
          batch.y.dispose();
          // the readback submits this step; the previous step's result is handled while it runs
          const next = metrics.read();
          next.catch(() => {}); // awaited below; if handling the previous step throws, not unhandled
          if (pending) await handle(pending);
          pending = next;
        }
        if (pending) await handle(pending);
        const row = { epoch: epoch + 1, loss: lossSum / count, train: correct / count, test: NaN };
        const ev = await this.evaluate(test);
        row.test = ev.accuracy;
        model.train();
        sched.step();
        this.epochsDone = epoch + 1;
        this.ev.epochDone(step, row);
      }
    } finally {
      metrics.dispose();
    }
  }

  private paused(): Promise<void> {
    this.pauseRequested = false;
    this.set({ state: "paused", progress: null });
    return new Promise((resolve) => this.resumeGate = resolve);
  }

  /** Test accuracy (overall and per class) of the current model, and the first 40 predictions. */
  async evaluate(loader?: E.CifarLoader, c = this.config): Promise<Evaluation> {
    if (!this.model || !c) throw new Error("no model yet: start training or load a checkpoint first");
    const model = this.model;
    if (!loader) {
      const data = await this.data(1);
      const split =
        E.makeSplits(data, { testLimit: c.testImages || undefined, trainLimit: 1, validationLimit: 1 }).test;
      loader = new E.CifarLoader(split, { batchSize: c.batchSize });
    }
    // the notebook evaluates in training mode (batch statistics); the clean protocol in eval mode
    E.evaluationMode(model, c.protocol);
    const perClass = Array.from({ length: 10 }, () => ({ correct: 0, total: 0 }));
    const samples: Evaluation["samples"] = [];
    const split = loader.split, batchSize = loader.batchSize;
    const metrics = new E.GpuMetrics();
    let counted: { accuracy: number; images: number };
    const before = this.status.state;
    let seen = 0;
    this.set({ state: "evaluating", progress: { done: 0, total: split.count, unit: "images" } });
    try {
      // the accuracy is counted on the GPU; the predictions read back give the per-class counts and samples
      counted = await E.evaluateAccuracy(model, loader, metrics, {
        onBatch: async (batch, y) => {
          const [out] = await E.readMany([y]);
          const classes = out.length / batch.size;
          batch.labels.forEach((label, i) => {
            const p = argmax(out, i, classes);
            perClass[label].total++;
            if (p === label) perClass[label].correct++;
            if (samples.length < 40) {
              const k = batch.index * batchSize + i;
              samples.push({ image: split.images.subarray(k * 3072, (k + 1) * 3072), label, predicted: p });
            }
          });
          seen += batch.size;
          this.set({ progress: { done: seen, total: split.count, unit: "images" } });
        },
      });
    } finally {
      metrics.dispose();
      // back to the training phase when a run evaluates between epochs; else to where it was
      if (before === "training") this.set({ state: "training", progress: this.training });
      else this.set({ state: before === "evaluating" ? "idle" : before, progress: null });
    }
    const { accuracy, images } = counted;
    const result = { accuracy, images, perClass, samples };
    this.set({ testAccuracy: accuracy });
    this.ev.evaluated(result);
    return result;
  }

  /** The model as safetensors bytes in the trainer's checkpoint format (model tensors only). */
  async checkpointBytes(): Promise<Uint8Array> {
    if (!this.model || !this.config) {
      throw new Error("no model yet: start training or load a checkpoint first");
    }
    const state = {
      epoch: this.epochsDone,
      batch: 0,
      partial: { lossSum: 0, correct: 0, count: 0, seconds: 0 },
      rows: [],
      scheduler: { lastEpoch: this.epochsDone, baseLr: this.config.lr, lr: this.config.lr },
      dropRng: [],
    };
    return await E.encodeCheckpoint(this.model, null, trainConfig(this.config), state, {
      seal: false,
      metadata: { writer: "convnext-webgpu page" },
    });
  }

  /**
   * Loads a checkpoint (from `deno task train`, the page or PyTorch) into a model built from `c`, or
   * from the checkpoint's own configuration when it has one (returned, so the form can show it).
   */
  loadCheckpoint(bytes: Uint8Array, source: string, c: PageConfig): PageConfig {
    if (this.busy) throw new Error("pause is not enough: wait until the run is done to load a checkpoint");
    const parts = E.decodeCheckpoint(bytes, source);
    let cfg = c;
    if (parts.config) {
      const t = parts.config as TrainConfig;
      cfg = {
        ...c,
        stage: E.checkStage(t.stage),
        widths: t.widths,
        depths: t.depths,
        stemFeatures: t.stemFeatures,
        protocol: t.protocol,
        batchSize: t.batchSize,
        lr: t.lr,
        weightDecay: t.weightDecay,
        epochs: t.epochs,
        seed: t.seed,
        trainImages: t.trainLimit,
        testImages: t.evalLimit,
      };
    }
    const opt = parts.optimizer;
    this.loaded = {
      source,
      model: parts.model,
      optimizer: opt && Object.keys(opt.tensors).length ? opt : null,
      epoch: parts.state?.epoch ?? 0,
      schedulerLastEpoch: parts.state?.scheduler.lastEpoch ?? 0,
    };
    try {
      this.replaceModel(cfg);
    } catch (e) {
      this.loaded = null;
      throw e;
    }
    this.epochsDone = this.loaded.epoch;
    this.set({ state: "idle", epoch: this.loaded.epoch, step: 0, loss: null, testAccuracy: null });
    return cfg;
  }
}
