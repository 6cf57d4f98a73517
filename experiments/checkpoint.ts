// Training checkpoints: one safetensors file with the model's state dict under PyTorch's names (so
// it loads into the notebook's model as is, once the `optimizer.*` entries are dropped), the AdamW
// moments as `optimizer.<i>.exp_avg[_sq]`, and in the metadata the run's configuration, position
// (epoch, step), partial metric sums, results so far, schedule and random-generator states.
//
// Every file carries SHA-256 hashes of its tensors and metadata (nn/safetensors.ts) and is checked
// when read, with its values checked finite. The trainer keeps one earlier checkpoint beside the last
// (`run<k>.prev.safetensors`); when the last one fails verification, resume says so, sets it aside
// and continues from the previous one, never from damaged data.
//
// The bytes (what a checkpoint holds, encoding, decoding, verification) are training/checkpoint_bytes.ts;
// this file keeps what concerns files: atomic writes, the previous/damaged rotation, reading from disk
// and the comparison of configurations.

import type { Model } from "../models/zoo.ts";
import type { AdamW } from "../nn/optim.ts";
import { DamagedFileError, type ReadResult } from "../nn/safetensors.ts";
import {
  checkpointParts,
  encodeCheckpoint,
  loadModelPart,
  NonFiniteStateError,
  readCheckpointBytes,
  type TrainingState,
} from "../training/checkpoint_bytes.ts";
import { writeFileAtomic } from "./files.ts";
import type { TrainConfig } from "./config.ts";

export { CHECKPOINT_FORMAT, type TrainingState } from "../training/checkpoint_bytes.ts";

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
  "synthetic",
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
  let bytes: Uint8Array;
  try {
    bytes = await encodeCheckpoint(model, optimizer, cfg, state);
  } catch (e) {
    if (!(e instanceof NonFiniteStateError)) throw e;
    throw new Error(
      `${e.message}; ${path} was not overwritten and still holds the last good state. Try a lower --lr.`,
    );
  }
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
  return await readCheckpointBytes(await Deno.readFile(path), path, log);
}

/** The training configuration stored in a checkpoint written by the trainer. */
export function checkpointConfig(file: ReadResult, path: string): TrainConfig {
  const parts = checkpointParts(file);
  if (!parts.trainer) {
    throw new Error(`${path} is not a checkpoint written by \`deno task train\` (no training metadata)`);
  }
  return parts.config as TrainConfig;
}

/** Loads the model part of a checkpoint into `model`, checking it fits. */
export function loadCheckpointModel(file: ReadResult, model: Model, path: string): void {
  loadModelPart(model, checkpointParts(file).model, path);
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
  const parts = checkpointParts(file);
  loadModelPart(model, parts.model, from);
  if (!parts.optimizer) {
    throw new Error(`${from} has no optimizer state: it is a best-model file, not a resumable checkpoint`);
  }
  optimizer.loadStateDict(parts.optimizer);
  return parts.state!;
}
