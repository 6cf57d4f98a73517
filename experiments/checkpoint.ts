// Training checkpoints: one safetensors file with the model's state dict under PyTorch's names (so
// it loads into the notebook's model as is, once the `optimizer.*` entries are dropped), the AdamW
// moments as `optimizer.<i>.exp_avg[_sq]`, and in the metadata the run's configuration, position
// (epoch, step), partial metric sums, results so far, schedule and random-generator states.

import type { Model } from "./models.ts";
import type { AdamW } from "../nn/optim.ts";
import { checkStateFits, loadSafetensors, moduleTensors, saveSafetensors } from "../nn/safetensors.ts";
import type { TrainConfig } from "./config.ts";
import type { EpochRow } from "./results.ts";

export const CHECKPOINT_FORMAT = "convnext-webgpu/train-checkpoint/1";

export interface TrainingState {
  /** Epochs completed (the epoch to continue with, 0-based). */
  epoch: number;
  /** Steps of `epoch` already taken (non-zero after Ctrl-C mid-epoch). */
  batch: number;
  /** Metric sums of the steps already taken in `epoch`. */
  partial: { lossSum: number; correct: number; count: number; seconds: number };
  rows: EpochRow[];
  scheduler: { lastEpoch: number; baseLr: number; lr: number };
  dropRng: number[][];
}

/** Configuration keys that must match for a resumed run to continue the same run. */
const MUST_MATCH: (keyof TrainConfig)[] = [
  "stage",
  "widths",
  "depths",
  "stemFeatures",
  "dropPath",
  "protocol",
  "epochs",
  "batchSize",
  "lr",
  "weightDecay",
  "seed",
  "trainLimit",
  "evalLimit",
  "rescoreTrain",
];

export async function saveTrainingCheckpoint(
  path: string,
  model: Model,
  optimizer: AdamW | null,
  cfg: TrainConfig,
  state: TrainingState,
): Promise<void> {
  const tensors = await moduleTensors(model);
  const metadata: Record<string, string> = {
    format: CHECKPOINT_FORMAT,
    stage: cfg.stage,
    config: JSON.stringify(cfg),
    state: JSON.stringify(state),
  };
  if (optimizer) {
    const os = await optimizer.stateDict();
    for (const [k, data] of Object.entries(os.tensors)) {
      tensors[`optimizer.${k}`] = { shape: [data.length], data };
    }
    metadata.optimizer = JSON.stringify({ step: os.step, lr: os.lr });
  }
  await saveSafetensors(path, tensors, metadata);
}

/** Reads the model part of a checkpoint into `model` (checking it fits) and returns the metadata. */
export async function loadCheckpointModel(path: string, model: Model) {
  const file = await loadSafetensors(path);
  const modelPart = {
    metadata: file.metadata,
    tensors: Object.fromEntries(Object.entries(file.tensors).filter(([n]) => !n.startsWith("optimizer."))),
  };
  checkStateFits(modelPart, model, path);
  model.loadStateDict(Object.fromEntries(Object.entries(modelPart.tensors).map(([n, t]) => [n, t.data])));
  return file;
}

/** The training configuration stored in a checkpoint written by the trainer. */
export async function checkpointConfig(path: string): Promise<TrainConfig> {
  const file = await loadSafetensors(path);
  if (file.metadata.format !== CHECKPOINT_FORMAT || !file.metadata.config) {
    throw new Error(`${path} is not a checkpoint written by \`deno task train\` (no training metadata)`);
  }
  return JSON.parse(file.metadata.config) as TrainConfig;
}

/**
 * Restores model and optimizer from `path` and returns the training state, or null when there is no
 * checkpoint. Refuses a checkpoint of another configuration, naming the first difference.
 */
export async function loadTrainingCheckpoint(
  path: string,
  model: Model,
  optimizer: AdamW,
  cfg: TrainConfig,
): Promise<TrainingState | null> {
  try {
    await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  const saved = await checkpointConfig(path);
  for (const k of MUST_MATCH) {
    if (JSON.stringify(saved[k]) !== JSON.stringify(cfg[k])) {
      throw new Error(
        `Cannot resume from ${path}: it was trained with ${k} = ${JSON.stringify(saved[k])}, ` +
          `this run asks for ${JSON.stringify(cfg[k])}. Use the same flags, or another --out.`,
      );
    }
  }
  const file = await loadCheckpointModel(path, model);
  const opt = JSON.parse(file.metadata.optimizer ?? "null") as { step: number; lr: number } | null;
  if (!opt) {
    throw new Error(`${path} has no optimizer state: it is a best-model file, not a resumable checkpoint`);
  }
  const tensors: Record<string, Float32Array> = {};
  for (const [n, t] of Object.entries(file.tensors)) {
    if (n.startsWith("optimizer.")) tensors[n.slice("optimizer.".length)] = t.data;
  }
  optimizer.loadStateDict({ step: opt.step, lr: opt.lr, tensors });
  return JSON.parse(file.metadata.state) as TrainingState;
}
