// One training step, the recipe's: forward, cross-entropy, zeroGrad, backward, the AdamW step and (when
// given) the metric sums, all recorded into the current command encoder. Nothing is submitted and nothing
// is waited for: the caller decides when to sync or read back. Every training loop of the project (the
// trainer, the page, the step benchmark, the step check both engines run) records its steps here.
//
// Replay: the first step of a signature (model, optimizer, metrics, batch shapes, training mode, the
// parameters' and buffers' storage, the planner's state) runs eagerly on copies of its batch in buffers
// the step keeps, and its commands are recorded (kernels/runtime.ts `startRecording`); later steps of the
// same signature copy their batch into those buffers and encode the recorded commands again, with the
// optimizer's scalars of that step, without running the tape or the planner. Any change of signature
// records afresh; stochastic depth (a draw on the host that changes the commands), a pass per dispatch
// (profiling) and `setReplay(false)` run eagerly.

import { crossEntropy } from "../autograd/ops/loss.ts";
import { empty, keep, scope, type Storage, type Tensor } from "../autograd/tensor.ts";
import type { AdamW } from "../nn/optim.ts";
import type { Module } from "../nn/module.ts";
import { StochasticDepth } from "../nn/layers.ts";
import {
  copy,
  passPerDispatchOn,
  plannerContext,
  type Recording,
  releaseRecording,
  replayRecording,
  resourcesEpoch,
  startRecording,
  stopRecording,
  sync,
} from "../kernels/runtime.ts";
import type { GpuMetrics } from "./metrics.ts";

/** What a step updates: the model (in training mode), its optimizer, and optionally the metric sums. */
export interface StepParts {
  model: Module;
  optimizer: AdamW;
  metrics?: GpuMetrics | null;
}

/** A batch: `x` [B, 3, H, W] images, `y` [B] class indices as f32. */
export interface StepBatch {
  x: Tensor;
  y: Tensor;
}

/** Records the step and returns its loss tensor, created in the caller's scope. */
function record(p: StepParts, b: StepBatch): Tensor {
  const out = p.model.forward(b.x);
  const loss = crossEntropy(out, b.y);
  p.optimizer.zeroGrad();
  loss.backward();
  p.optimizer.step();
  p.metrics?.add(out, b.y, loss);
  return loss;
}

/** Records one training step; every tensor it creates is freed (the metric sums hold its results). */
export function trainStep(p: StepParts, b: StepBatch): void {
  if (!replayable(p)) {
    scope(() => {
      record(p, b);
    });
  } else {
    const { loss, owned } = stepReplayed(p, b);
    if (owned) loss.dispose();
  }
}

/** Records one training step and returns its loss (kept: the caller reads it and disposes it). */
export function trainStepLoss(p: StepParts, b: StepBatch): Tensor {
  if (!replayable(p)) return scope(() => keep(record(p, b)));
  const { loss, owned } = stepReplayed(p, b);
  if (owned) return loss;
  const out = empty(loss.shape);
  copyInto(loss, out);
  return out;
}

// ---------------------------------------------------------------- replay

let replayOn = true;

/** Turns step replay on (the default) or off (every step eager: `--no-replay`, `CONVNEXT_REPLAY=0`). */
export function setReplay(on: boolean): void {
  replayOn = on;
}

/** Whether steps are replayed where they can be. */
export function replayEnabled(): boolean {
  return replayOn;
}

/** How the last step ran: eagerly (replay off or not possible), eagerly while recording, or replayed. */
export type StepMode = "eager" | "recorded" | "replayed";
let lastMode: StepMode = "eager";

export function lastStepMode(): StepMode {
  return lastMode;
}

interface Recorded {
  signature: string;
  model: Module;
  metrics: GpuMetrics | null;
  planner: object;
  storages: Storage[];
  rec: Recording;
  /** The batch buffers the recorded commands read. */
  x: Tensor;
  y: Tensor;
  /** The loss tensor the recorded commands write (the recording holds it). */
  loss: Tensor;
  /** Host counters a step moves on (BatchNorm's num_batches_tracked), with how far. */
  counters: [{ numBatchesTracked: number }, number][];
}

const recorded = new WeakMap<AdamW, Recorded>();

function replayable(p: StepParts): boolean {
  if (!replayOn || passPerDispatchOn()) {
    dropRecording(p.optimizer);
    lastMode = "eager";
    return false;
  }
  const drawing = p.model.training && partsOf(p.model).drawing.some((m) => m.training && m.p > 0);
  if (drawing) lastMode = "eager";
  return !drawing;
}

function signatureOf(p: StepParts, b: StepBatch): string {
  const ctx = plannerContext();
  const rules = ctx.overrides.map((r) => `${r.target}=${r.variant}`).join(",");
  return `${b.x.shape}|${b.y.shape}|${p.model.training}|${rules}|${ctx.winners.size}|${ctx.autotune}|${resourcesEpoch()}`;
}

/** What a step's signature and host effects read of a model, found once per model (its tree is fixed). */
interface ModelParts {
  /** Parameters and buffers (running statistics): their storage must be what the recording binds. */
  tensors: Tensor[];
  /** Stochastic depth modules: a draw on the host per step. */
  drawing: StochasticDepth[];
  /** Modules with a host-side step counter (BatchNorm's num_batches_tracked). */
  counting: { numBatchesTracked: number }[];
}

const parts = new WeakMap<Module, ModelParts>();

function partsOf(model: Module): ModelParts {
  let found = parts.get(model);
  if (found) return found;
  const modules = model.namedModules().map(([, m]) => m);
  found = {
    tensors: [...model.parameters(), ...model.namedBuffers().map(([, t]) => t)],
    drawing: modules.filter((m): m is StochasticDepth => m instanceof StochasticDepth),
    counting: modules.filter((m): m is Module & { numBatchesTracked: number } =>
      typeof (m as { numBatchesTracked?: unknown }).numBatchesTracked === "number"
    ),
  };
  parts.set(model, found);
  return found;
}

const storagesOf = (m: Module): Storage[] => partsOf(m).tensors.map((t) => t.storage);

function stillValid(r: Recorded, p: StepParts, signature: string): boolean {
  if (r.signature !== signature || r.model !== p.model || r.metrics !== (p.metrics ?? null)) return false;
  if (r.planner !== plannerContext() || r.rec.broken) return false;
  const now = partsOf(p.model).tensors;
  return now.length === r.storages.length && now.every((t, i) => t.storage === r.storages[i]);
}

function dropRecording(opt: AdamW): void {
  const r = recorded.get(opt);
  if (!r) return;
  recorded.delete(opt);
  releaseRecording(r.rec);
  r.x.dispose();
  r.y.dispose();
  r.loss.dispose();
}

function copyInto(src: Tensor, dst: Tensor): void {
  if (src.storage.buffer === dst.storage.buffer && src.storage.offset === dst.storage.offset) return;
  copy(src.storage.buffer, src.storage.offset, dst.storage.buffer, dst.storage.offset, src.size * 4);
}

/**
 * Replays the recorded step of this signature, or runs the step eagerly and records it. Returns the
 * step's loss, owned by the caller when the step could not be recorded (else the recording's).
 */
function stepReplayed(p: StepParts, b: StepBatch): { loss: Tensor; owned: boolean } {
  const signature = signatureOf(p, b);
  const r = recorded.get(p.optimizer);
  if (r && stillValid(r, p, signature)) {
    copyInto(b.x, r.x);
    copyInto(b.y, r.y);
    replayRecording(r.rec, [p.optimizer.nextStepScalars()]);
    for (const [m, d] of r.counters) m.numBatchesTracked += d;
    lastMode = "replayed";
    return { loss: r.loss, owned: false };
  }
  dropRecording(p.optimizer);
  const x = keep(empty(b.x.shape)), y = keep(empty(b.y.shape));
  copyInto(b.x, x);
  copyInto(b.y, y);
  const counters = partsOf(p.model).counting;
  const before = counters.map((m) => m.numBatchesTracked);
  startRecording();
  let rec: Recording, loss: Tensor;
  try {
    loss = scope(() => keep(record(p, { x, y })));
  } finally {
    rec = stopRecording();
  }
  const next: Recorded = {
    signature,
    model: p.model,
    metrics: p.metrics ?? null,
    planner: plannerContext(),
    storages: storagesOf(p.model),
    rec,
    x,
    y,
    loss,
    counters: counters.map((m, i) =>
      [m, m.numBatchesTracked - before[i]] as [{ numBatchesTracked: number }, number]
    )
      .filter(([, d]) => d !== 0),
  };
  if (rec.broken || rec.writes !== 1) {
    releaseRecording(rec);
    x.dispose();
    y.dispose();
    lastMode = "eager";
    return { loss, owned: true };
  }
  recorded.set(p.optimizer, next);
  lastMode = "recorded";
  return { loss, owned: false };
}

/** Keeps at most one step queued behind the one running, so the host never runs far ahead of the GPU. */
export class StepPacer {
  private inFlight: Promise<void> | null = null;

  /** Call after recording each step: waits for the step before it. */
  async stepped(): Promise<void> {
    const done = sync();
    done.catch(() => {}); // awaited on the next call; if the wait before it throws, it must not go unhandled
    if (this.inFlight) await this.inFlight;
    this.inFlight = done;
  }

  /** Waits for the last step recorded. */
  async drain(): Promise<void> {
    const last = this.inFlight;
    this.inFlight = null;
    if (last) await last;
  }
}
