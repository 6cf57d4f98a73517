// Training checkpoints as bytes: one safetensors file with the model's state dict under PyTorch's names
// (so it loads into the notebook's model as is, once the `optimizer.*` entries are dropped), the AdamW
// moments as `optimizer.<i>.exp_avg[_sq]`, and in the metadata the format, the stage, the run's
// configuration, its position (epoch, step), partial metric sums, results so far, schedule and
// random-generator states, and the optimizer's step and learning rate. Files, their atomic writes and
// the previous/damaged rotation are the caller's (experiments/checkpoint.ts; the page downloads bytes).

import type { Module } from "../nn/module.ts";
import type { AdamW } from "../nn/optim.ts";
import {
  checkFinite,
  checkStateFits,
  decodeSafetensors,
  encodeSafetensors,
  firstNonFinite,
  loadTensors,
  moduleTensors,
  type ReadResult,
  readSafetensors,
  type SafetensorsFile,
  sealSafetensors,
  type TensorEntry,
  unverifiedNote,
} from "../nn/safetensors.ts";

export const CHECKPOINT_FORMAT = "convnext-webgpu/train-checkpoint/1";

/** One epoch's results: the notebook's columns (loss, Train, Validation, Test) plus epoch, lr, seconds. */
export interface EpochRow {
  epoch: number;
  loss: number;
  Train: number;
  Validation: number;
  Test: number;
  lr: number;
  seconds: number;
}

/** Where a run is, as a checkpoint's `state` metadata holds it. */
export interface TrainingState {
  /** Epochs completed (the epoch to continue with, 0-based). */
  epoch: number;
  /** Steps of `epoch` already taken (non-zero after a stop mid-epoch). */
  batch: number;
  /** Metric sums of the steps already taken in `epoch`. */
  partial: { lossSum: number; correct: number; count: number; seconds: number };
  rows: EpochRow[];
  scheduler: { lastEpoch: number; baseLr: number; lr: number };
  dropRng: number[][];
}

/** The optimizer part of a checkpoint: AdamW's step, learning rate and moments. */
export interface OptimizerPart {
  step: number;
  lr: number;
  tensors: Record<string, Float32Array>;
}

/** Thrown by `encodeCheckpoint` when a weight or optimizer value is not finite (nothing is encoded). */
export class NonFiniteStateError extends Error {
  constructor(readonly tensor: string, readonly value: number, readonly index: number, epoch: number) {
    super(`Training diverged: tensor "${tensor}" became ${value} (index ${index}) by epoch ${epoch}`);
  }
}

export interface EncodeOptions {
  /** Add the SHA-256 hashes of tensors and metadata, checked at every load (default true). */
  seal?: boolean;
  /** More metadata entries, after the checkpoint's own. */
  metadata?: Record<string, string>;
}

/**
 * The checkpoint of `model` (and `optimizer`, when given: a resumable checkpoint; without, a model file
 * such as run<k>.best.safetensors) at `state`, with `config` (the run's settings, stored as JSON).
 * Refuses non-finite weights or optimizer state (NonFiniteStateError, naming the tensor).
 */
export async function encodeCheckpoint(
  model: Module,
  optimizer: AdamW | null,
  config: { stage: string },
  state: TrainingState,
  opts: EncodeOptions = {},
): Promise<Uint8Array> {
  const tensors: Record<string, TensorEntry> = await moduleTensors(model);
  const metadata: Record<string, string> = {
    format: CHECKPOINT_FORMAT,
    stage: config.stage,
    config: JSON.stringify(config),
    state: JSON.stringify(state),
  };
  if (optimizer) {
    const os = await optimizer.stateDict();
    for (const [k, data] of Object.entries(os.tensors)) {
      tensors[`optimizer.${k}`] = { shape: [data.length], data };
    }
    metadata.optimizer = JSON.stringify({ step: os.step, lr: os.lr });
  }
  Object.assign(metadata, opts.metadata);
  const bad = firstNonFinite(tensors);
  if (bad) throw new NonFiniteStateError(bad.name, bad.value, bad.index, state.epoch + (state.batch ? 1 : 0));
  return opts.seal === false
    ? encodeSafetensors(tensors, metadata)
    : await sealSafetensors(tensors, metadata);
}

/** A checkpoint's parts, as written by `encodeCheckpoint` (or a PyTorch state dict: model part only). */
export interface CheckpointParts {
  /** Written by the trainer or the page (the format and a configuration in the metadata). */
  trainer: boolean;
  /** The stored configuration (JSON-parsed), or null. */
  config: unknown;
  state: TrainingState | null;
  /** The model's tensors (every entry but `optimizer.*`), with the file's metadata. */
  model: SafetensorsFile;
  /** null when the file has no optimizer metadata (a model file, or a PyTorch state dict). */
  optimizer: OptimizerPart | null;
}

/** Splits a decoded safetensors file into a checkpoint's parts. */
export function checkpointParts(file: SafetensorsFile): CheckpointParts {
  const model: Record<string, TensorEntry> = {}, optim: Record<string, Float32Array> = {};
  for (const [n, t] of Object.entries(file.tensors)) {
    if (n.startsWith("optimizer.")) optim[n.slice("optimizer.".length)] = t.data;
    else model[n] = t;
  }
  const meta = JSON.parse(file.metadata.optimizer ?? "null") as { step: number; lr: number } | null;
  return {
    trainer: file.metadata.format === CHECKPOINT_FORMAT && !!file.metadata.config,
    config: file.metadata.config ? JSON.parse(file.metadata.config) : null,
    state: JSON.parse(file.metadata.state ?? "null") as TrainingState | null,
    model: { metadata: file.metadata, tensors: model },
    optimizer: meta ? { step: meta.step, lr: meta.lr, tensors: optim } : null,
  };
}

/** Decodes checkpoint bytes without verifying them (files written by the page carry no hashes). */
export function decodeCheckpoint(bytes: Uint8Array, source: string): CheckpointParts {
  return checkpointParts(decodeSafetensors(bytes, source));
}

/**
 * Decodes and verifies checkpoint bytes: the hashes (a file without them, e.g. from PyTorch, is noted
 * through `log`) and finite values. Throws DamagedFileError (nn/safetensors.ts) naming the damage.
 */
export async function readCheckpointBytes(
  bytes: Uint8Array,
  source: string,
  log: (s: string) => void,
): Promise<ReadResult> {
  const file = await readSafetensors(bytes, source);
  if (!file.verified) log(unverifiedNote(source));
  checkFinite(file, source);
  return file;
}

/** Loads a checkpoint's model part into `model`, checking that it fits (names, shapes). */
export function loadModelPart(model: Module, part: SafetensorsFile, source: string): void {
  checkStateFits(part, model, source);
  loadTensors(model, part);
}
