// Training configuration: the notebook's recipe as defaults, the --quick preset, and CLI parsing.

import { parseArgs } from "node:util";
import { checkStage, NARROW, type Stage, STAGES } from "../models/stages.ts";
import type { Protocol, RunSettings } from "../training/recipe.ts";

export { checkStage, isStage, NARROW, type Stage, STAGES } from "../models/stages.ts";

/** Best test accuracy published by the notebook (mean of 3 runs). */
export const PUBLISHED: Record<Stage, number> = {
  base: 0.8348,
  stage_ratio: 0.8343,
  patchify: 0.7947,
  resnextify: 0.8310,
  inverted: 0.8485,
  kernel7: 0.8513,
  final: 0.9080,
};

export type { Protocol } from "../training/recipe.ts";

/** The trainer's configuration: the recipe's settings (training/recipe.ts) and the run's data, files, progress. */
export interface TrainConfig extends RunSettings {
  stage: Stage;
  epochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  seed: number;
  /** Training images used (of 45,000); 0 = all. */
  trainLimit: number;
  /** Validation and test images used; 0 = all. */
  evalLimit: number;
  widths?: number[];
  depths?: number[];
  stemFeatures?: number;
  dropPath: number;
  protocol: Protocol;
  rescoreTrain: boolean;
  dataDir?: string;
  /** Train on random CIFAR-shaped images from the seed instead of CIFAR-10 (data/synthetic.ts). */
  synthetic?: boolean;
  out: string;
  /** Progress refresh (and the only mid-epoch readback) every this many steps. */
  progressEvery: number;
  /** Seconds autotune may spend before the first step (default by adapter: training/tune.ts). */
  autotuneBudget?: number;
}

export const TRAIN_HELP = `deno task train [options]

Trains the study's models on CIFAR-10 with the notebook's recipe and writes results under --out.

  --stage NAME         base|stage_ratio|patchify|resnextify|inverted|kernel7|final|all (default final);
                       "all" runs the seven in order, skipping runs already complete
  --runs N             independent runs, seeds seed, seed+1, ... (default 1)
  --run K              train only run K (0-based, seed seed+K): one task of a job array
  --epochs N           default 100
  --batch-size N       default 64
  --lr X               AdamW learning rate, default 0.004 (cosine annealing, T_max = epochs)
  --weight-decay X     default 0.05
  --seed N             default 0
  --train-limit N      train on the first N of the 45,000 training images (default all)
  --eval-limit N       validate/test on the first N images of each (default all)
  --widths a,b,c,d     model overrides (default 64,128,256,512)
  --depths a,b,c,d     (default: the stage's)
  --stem-features N    (default 64)
  --drop-path P        stochastic depth (notebook's rule: stage i uses linspace(0,P,sum(depths))[i])
  --protocol NAME      notebook (default): softmax head in steps 1-6, evaluation in training mode,
                       training augmentations on validation, best *test* accuracy reported;
                       clean: logits into the loss, eval mode, plain validation, the epoch with
                       the best validation accuracy is reported with its test accuracy
  --rescore-train      re-score the whole training set each epoch (as the notebook; slow)
  --data-dir DIR       CIFAR-10 binary folder (else $CIFAR10_DIR, else ./data/cifar-10-batches-bin,
                       downloaded when missing)
  --synthetic          random CIFAR-shaped images and labels from the seed instead of CIFAR-10
                       (for a machine without the data: every code path runs, accuracies mean nothing)
  --out DIR            results folder (default results/<stage>)
  --resume             continue the runs found in --out from their last checkpoint (from the
                       previous one, run<k>.prev.safetensors, when the last fails verification)
  --quick              small preset for machines without a GPU: final stage, narrow model
                       (widths 16,32,64,128, depths 1,1,3,1, stem 16), 2,000 training and 500
                       evaluation images, 2 epochs; explicit flags still override it
  --progress-every N   progress bar refresh in steps (default 10)
  --plan SPEC          force kernel variants or turn fusions off, e.g. "conv=tiled", "fuse=off"
                       (default: $CONVNEXT_PLAN; see the README's "The kernel plan")
  --no-autotune        the adapter profile's default kernels (also CONVNEXT_AUTOTUNE=0); by default
                       competing kernel variants are timed once before the first step and the
                       winners cached per adapter in ./data/cache/autotune
  --autotune-budget S  seconds autotune may spend before the first step, compiling included (also
                       CONVNEXT_AUTOTUNE_BUDGET; default 60 on a software adapter, 30 on a GPU);
                       shapes go largest first, and those left run the default kernels and are
                       tuned on later runs; 0 uses the cached winners only
  --no-replay          run every training step eagerly (also CONVNEXT_REPLAY=0); by default the
                       first step of each batch shape is recorded and later ones replay its
                       commands (bit for bit the same results, far less host work per step)
  -h, --help           this help

Each run writes run<k>.csv and run<k>.json after every epoch, and checkpoints run<k>.last.safetensors
(the one before it kept as run<k>.prev.safetensors) and run<k>.best.safetensors, with SHA-256 hashes
checked on every load. Ctrl-C, SIGTERM (Slurm, Kubernetes, systemd) and SIGHUP finish the current
training step (or the evaluation under way), write a checkpoint and exit with status 130, 143 and
129; a second signal quits at once. A complete run is skipped when asked again with the same flags
and refused, saying what differs, with other flags.
`;

export interface TrainCli {
  config: TrainConfig;
  stages: Stage[];
  runs: number;
  /** The run indices to train: 0..runs-1, or only --run K. */
  runIndices: number[];
  resume: boolean;
  /** Kernel plan override (--plan), autotune switch (--no-autotune: false), replay (--no-replay: false). */
  kernels: { plan?: string; autotune?: boolean; replay?: boolean };
  help: boolean;
}

function numList(name: string, v: string | undefined): number[] | undefined {
  if (v === undefined) return undefined;
  const a = v.split(",").map((x) => Number(x.trim()));
  if (a.length !== 4 || a.some((x) => !Number.isInteger(x) || x <= 0)) {
    throw new Error(`--${name} needs four positive integers separated by commas, got "${v}"`);
  }
  return a;
}

function num(name: string, v: string | undefined, def: number, integer = true, min = 0): number {
  if (v === undefined) return def;
  const x = Number(v);
  if (!Number.isFinite(x) || (integer && !Number.isInteger(x)) || x < min) {
    throw new Error(`--${name} needs a${integer ? "n integer" : " number"} ≥ ${min}, got "${v}"`);
  }
  return x;
}

/** CONVNEXT_AUTOTUNE_BUDGET, where set and readable. */
function budgetFromEnv(): string | undefined {
  const name = "CONVNEXT_AUTOTUNE_BUDGET";
  if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") return undefined;
  return Deno.env.get(name) || undefined;
}

export function parseTrainArgs(args: string[]): TrainCli {
  const { values: v } = parseArgs({
    args,
    strict: true,
    options: {
      stage: { type: "string" },
      runs: { type: "string" },
      run: { type: "string" },
      epochs: { type: "string" },
      "batch-size": { type: "string" },
      lr: { type: "string" },
      "weight-decay": { type: "string" },
      seed: { type: "string" },
      "train-limit": { type: "string" },
      "eval-limit": { type: "string" },
      widths: { type: "string" },
      depths: { type: "string" },
      "stem-features": { type: "string" },
      "drop-path": { type: "string" },
      protocol: { type: "string" },
      "rescore-train": { type: "boolean" },
      "data-dir": { type: "string" },
      synthetic: { type: "boolean" },
      out: { type: "string" },
      resume: { type: "boolean" },
      quick: { type: "boolean" },
      "progress-every": { type: "string" },
      plan: { type: "string" },
      "no-autotune": { type: "boolean" },
      "no-replay": { type: "boolean" },
      "autotune-budget": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  const quick = v.quick ?? false;
  const stageArg = v.stage ?? "final";
  const stages = stageArg === "all" ? [...STAGES] : [checkStage(stageArg)];
  const protocol = v.protocol ?? "notebook";
  if (protocol !== "notebook" && protocol !== "clean") {
    throw new Error(`--protocol must be "notebook" or "clean", got "${protocol}"`);
  }
  if (v.synthetic && v["data-dir"]) throw new Error("--synthetic and --data-dir exclude each other");
  const dropPath = num("drop-path", v["drop-path"], 0, false);
  if (dropPath >= 1) throw new Error(`--drop-path must be below 1, got ${dropPath}`);
  const config: TrainConfig = {
    stage: stages[0],
    epochs: num("epochs", v.epochs, quick ? 2 : 100, true, 1),
    batchSize: num("batch-size", v["batch-size"], 64, true, 1),
    lr: num("lr", v.lr, 0.004, false),
    weightDecay: num("weight-decay", v["weight-decay"], 0.05, false),
    seed: num("seed", v.seed, 0),
    trainLimit: num("train-limit", v["train-limit"], quick ? 2000 : 0),
    evalLimit: num("eval-limit", v["eval-limit"], quick ? 500 : 0),
    widths: numList("widths", v.widths) ?? (quick ? NARROW.widths : undefined),
    depths: numList("depths", v.depths) ?? (quick ? NARROW.depths : undefined),
    stemFeatures: v["stem-features"] !== undefined
      ? num("stem-features", v["stem-features"], 64, true, 1)
      : (quick ? NARROW.stemFeatures : undefined),
    dropPath,
    protocol,
    rescoreTrain: v["rescore-train"] ?? false,
    dataDir: v["data-dir"],
    synthetic: v.synthetic || undefined,
    out: v.out ?? "",
    progressEvery: num("progress-every", v["progress-every"], 10, true, 1),
  };
  const budget = v["autotune-budget"] ?? budgetFromEnv();
  if (budget !== undefined) config.autotuneBudget = num("autotune-budget", budget, 0, false);
  const runs = num("runs", v.runs, 1, true, 1);
  const one = v.run === undefined ? undefined : num("run", v.run, 0);
  if (one !== undefined && v.runs !== undefined && one >= runs) {
    throw new Error(`--run ${one} is not one of the ${runs} runs (--runs ${runs}): runs are 0..${runs - 1}`);
  }
  return {
    config,
    stages,
    runs,
    runIndices: one !== undefined ? [one] : Array.from({ length: runs }, (_, i) => i),
    resume: v.resume ?? false,
    kernels: {
      plan: v.plan,
      autotune: v["no-autotune"] ? false : undefined,
      replay: v["no-replay"] ? false : undefined,
    },
    help: v.help ?? false,
  };
}
