// Per-run results: the CSV of epochs (the notebook's columns plus epoch, lr, seconds) and a JSON
// summary. Both are rewritten whole, atomically, after every epoch.

import { stringify } from "csv-stringify/sync";
import type { EpochRow } from "../training/checkpoint_bytes.ts";
import type { Protocol, Stage, TrainConfig } from "./config.ts";

export type { EpochRow } from "../training/checkpoint_bytes.ts";

export const CSV_COLUMNS: (keyof EpochRow)[] = [
  "epoch",
  "loss",
  "Train",
  "Validation",
  "Test",
  "lr",
  "seconds",
];

export interface RunSummary {
  stage: Stage;
  run: number;
  seed: number;
  protocol: Protocol;
  config: TrainConfig;
  /** What it trained on: CIFAR-10, or random images from the seed (`--synthetic`). */
  data: "cifar10" | "synthetic";
  adapter: string;
  parameters: number;
  epochsCompleted: number;
  complete: boolean;
  bestTest: number;
  bestValidation: number;
  /** The accuracy this run reports under its protocol, and the epoch it comes from. */
  reported: { accuracy: number; epoch: number; rule: string };
  totalSeconds: number;
  imagesPerSecond: number;
}

/** Writes `text` to `path` through a temp file and a rename, so a crash never leaves half a file. */
export async function writeAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.${Deno.pid}.tmp`;
  if (typeof data === "string") await Deno.writeTextFile(tmp, data);
  else await Deno.writeFile(tmp, data);
  await Deno.rename(tmp, path);
}

export function csvText(rows: EpochRow[]): string {
  return stringify(rows.map((r) => CSV_COLUMNS.map((c) => r[c])), { header: true, columns: CSV_COLUMNS });
}

/** The accuracy a run reports: notebook = best test accuracy; clean = test at the best validation epoch. */
export function reportedAccuracy(rows: EpochRow[], protocol: Protocol): RunSummary["reported"] {
  if (!rows.length) return { accuracy: NaN, epoch: 0, rule: "no epochs" };
  const key: keyof EpochRow = protocol === "notebook" ? "Test" : "Validation";
  // ties go to the later epoch, as the notebook's `>=` does
  const best = rows.reduce((b, r) => (r[key] >= b[key] ? r : b));
  return {
    accuracy: best.Test,
    epoch: best.epoch,
    rule: protocol === "notebook" ? "best test accuracy" : "test accuracy at the best validation epoch",
  };
}

export function runPaths(outDir: string, run: number) {
  const base = `${outDir}/run${run}`;
  return {
    csv: `${base}.csv`,
    summary: `${base}.json`,
    checkpoint: `${base}.last.safetensors`,
    best: `${base}.best.safetensors`,
  };
}
