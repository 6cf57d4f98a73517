// Training checkpoints: one safetensors file with the model's state dict under PyTorch's names (so
// it loads into the notebook's model as is, once the `optimizer.*` entries are dropped), the AdamW
// moments as `optimizer.<i>.exp_avg[_sq]`, and in the metadata the run's configuration, position
// (epoch, step), partial metric sums, results so far, schedule and random-generator states.
//
// Every file carries SHA-256 hashes of its tensors and metadata (nn/safetensors.ts) and is checked
// when read, with its values checked finite. The trainer keeps one earlier checkpoint beside the last
// (`run<k>.prev.safetensors`); when the last one fails verification, resume says so, sets it aside
// and continues from the previous one, never from damaged data.

import type { Model } from "../models/zoo.ts";
import type { AdamW } from "../nn/optim.ts";
import {
  checkFinite,
  checkStateFits,
  DamagedFileError,
  firstNonFinite,
  loadTensors,
  moduleTensors,
  type ReadResult,
  readSafetensors,
  sealSafetensors,
  type TensorEntry,
  unverifiedNote,
} from "../nn/safetensors.ts";
import { writeFileAtomic } from "./files.ts";
import type { TrainConfig } from "./config.ts";
import type { EpochRow } from "./results.ts";

export const CHECKPOINT_FORMAT = "convnext-webgpu/train-checkpoint/1";

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

/** Configuration keys that must match for a resumed run to continue the same run. */
export const MUST_MATCH: (keyof TrainConfig)[] = [
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

/** The MUST_MATCH keys whose values differ, as "key = saved (now asked: value)" phrases. */
export function configDifferences(saved: Partial<TrainConfig>, cfg: TrainConfig): string[] {
  return MUST_MATCH.filter((k) => JSON.stringify(saved[k]) !== JSON.stringify(cfg[k])).map((k) =>
    `${k} = ${JSON.stringify(saved[k])} (this command asks for ${JSON.stringify(cfg[k])})`
  );
}

/** Where the checkpoint before `last` is kept: run<k>.last.safetensors → run<k>.prev.safetensors. */
export function previousCheckpoint(last: string): string {
  return last.endsWith(".last.safetensors")
    ? last.slice(0, -".last.safetensors".length) + ".prev.safetensors"
    : `${last}.prev`;
}

/**
 * Writes a checkpoint atomically; with `keepPrevious`, the checkpoint it replaces is kept under
 * `previousCheckpoint(path)`. Refuses to write non-finite weights or optimizer state (they would
 * replace a good checkpoint with a useless one), naming the tensor.
 */
export async function saveTrainingCheckpoint(
  path: string,
  model: Model,
  optimizer: AdamW | null,
  cfg: TrainConfig,
  state: TrainingState,
  opts: { keepPrevious?: boolean } = {},
): Promise<void> {
  const tensors: Record<string, TensorEntry> = await moduleTensors(model);
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
  const bad = firstNonFinite(tensors);
  if (bad) {
    throw new Error(
      `Training diverged: tensor "${bad.name}" became ${bad.value} (index ${bad.index}) by epoch ${
        state.epoch + (state.batch ? 1 : 0)
      }; ${path} was not overwritten and still holds the last good state. Try a lower --lr.`,
    );
  }
  const bytes = await sealSafetensors(tensors, metadata);
  try {
    await writeFileAtomic(path, bytes, opts.keepPrevious ? { keepPrevious: previousCheckpoint(path) } : {});
  } catch (e) {
    throw new Error(
      `Could not write the checkpoint ${path}: ${(e as Error).message}. ` +
        `The checkpoint already there (if any) is unchanged.`,
    );
  }
}

/** Reads and verifies a file (hashes, finite values); notes files without hashes through `log`. */
export async function readCheckpoint(path: string, log: (s: string) => void): Promise<ReadResult> {
  const file = await readSafetensors(await Deno.readFile(path), path);
  if (!file.verified) log(unverifiedNote(path));
  checkFinite(file, path);
  return file;
}

/** The training configuration stored in a checkpoint written by the trainer. */
export function checkpointConfig(file: ReadResult, path: string): TrainConfig {
  if (file.metadata.format !== CHECKPOINT_FORMAT || !file.metadata.config) {
    throw new Error(`${path} is not a checkpoint written by \`deno task train\` (no training metadata)`);
  }
  return JSON.parse(file.metadata.config) as TrainConfig;
}

/** Loads the model part of a checkpoint into `model`, checking it fits. */
export function loadCheckpointModel(file: ReadResult, model: Model, path: string): void {
  const modelPart = {
    metadata: file.metadata,
    tensors: Object.fromEntries(Object.entries(file.tensors).filter(([n]) => !n.startsWith("optimizer."))),
  };
  checkStateFits(modelPart, model, path);
  loadTensors(model, modelPart);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, (e) => {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  });
}

/** A file that cannot be used because its bytes are damaged (as opposed to a foreign checkpoint). */
function isDamage(e: unknown): boolean {
  return e instanceof DamagedFileError || /not a valid safetensors file/.test((e as Error).message);
}

/** Refuses a checkpoint of another configuration, naming the first difference. */
function checkSameRun(file: ReadResult, path: string, cfg: TrainConfig): void {
  const diff = configDifferences(checkpointConfig(file, path), cfg);
  if (diff.length) {
    throw new Error(
      `Cannot resume from ${path}: it was trained with ${diff[0]}. Use the same flags, or another --out.`,
    );
  }
}

/**
 * Restores model and optimizer from `path` (or, when it is damaged, from the previous checkpoint)
 * and returns the training state, or null when there is no checkpoint. Refuses a checkpoint of
 * another configuration, naming the first difference.
 */
export async function loadTrainingCheckpoint(
  path: string,
  model: Model,
  optimizer: AdamW,
  cfg: TrainConfig,
  log: (s: string) => void = console.log,
): Promise<TrainingState | null> {
  const prev = previousCheckpoint(path);
  const [hasLast, hasPrev] = [await exists(path), await exists(prev)];
  if (!hasLast && !hasPrev) return null;
  let file: ReadResult | null = null, from = path, damage = "";
  if (hasLast) {
    try {
      file = await readCheckpoint(path, log);
    } catch (e) {
      if (!isDamage(e)) throw e;
      damage = (e as Error).message;
    }
  }
  if (!file) {
    if (!hasPrev) {
      throw new Error(`${damage}\nThere is no earlier checkpoint (${prev}) to continue from.`);
    }
    log(
      damage
        ? `${damage}\nResuming from the previous checkpoint ${prev} instead; the damaged file is kept as ${path}.damaged`
        : `${path} is missing: resuming from the previous checkpoint ${prev}`,
    );
    try {
      file = await readCheckpoint(prev, log);
    } catch (e) {
      if (!isDamage(e)) throw e;
      throw new Error(`${damage}\nThe previous checkpoint is damaged too: ${(e as Error).message}`);
    }
    from = prev;
  }
  checkSameRun(file, from, cfg);
  if (damage) await Deno.rename(path, `${path}.damaged`);
  loadCheckpointModel(file, model, from);
  const opt = JSON.parse(file.metadata.optimizer ?? "null") as { step: number; lr: number } | null;
  if (!opt) {
    throw new Error(`${from} has no optimizer state: it is a best-model file, not a resumable checkpoint`);
  }
  const tensors: Record<string, Float32Array> = {};
  for (const [n, t] of Object.entries(file.tensors)) {
    if (n.startsWith("optimizer.")) tensors[n.slice("optimizer.".length)] = t.data;
  }
  optimizer.loadStateDict({ step: opt.step, lr: opt.lr, tensors });
  return JSON.parse(file.metadata.state) as TrainingState;
}
