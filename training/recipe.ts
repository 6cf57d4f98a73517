// The training recipe of a run, from its settings: the model (the stage, its overrides, the protocol's
// head), AdamW(lr, betas (0.9, 0.999), eps 1e-8, weight decay on every parameter) with
// CosineAnnealingLR(T_max = epochs) stepped per epoch, and the mode evaluation runs in. The trainer's
// TrainConfig (experiments/config.ts) and the page's configuration both satisfy `RunSettings`.

import { StochasticDepth } from "../nn/layers.ts";
import type { CifarSet } from "../data/cifar10_spec.ts";
import { makeLoaders } from "../data/loader.ts";
import { AdamW, CosineAnnealingLR } from "../nn/optim.ts";
import type { Stage } from "../models/stages.ts";
import { buildModel, type Model, type ModelOptions } from "../models/zoo.ts";

/**
 * notebook: steps 1–6 end in softmax (the loss applies log-softmax again) and evaluation runs in
 * training mode; clean: logits into the loss, evaluation in eval mode.
 */
export type Protocol = "notebook" | "clean";

/** What the recipe reads of a run's configuration. */
export interface RunSettings {
  stage: Stage;
  epochs: number;
  lr: number;
  weightDecay: number;
  widths?: number[];
  depths?: number[];
  stemFeatures?: number;
  dropPath?: number;
  protocol: Protocol;
}

/** The model options of a run. */
export function runModelOptions(s: RunSettings, seed: number): ModelOptions {
  return {
    widths: s.widths,
    depths: s.depths,
    stemFeatures: s.stemFeatures,
    dropPath: s.dropPath,
    softmaxHead: s.protocol === "notebook" ? undefined : false,
    seed,
  };
}

/** The model of a run, initialised from `seed`. */
export function buildRunModel(s: RunSettings, seed: number): Model {
  return buildModel(s.stage, runModelOptions(s, seed));
}

/** The optimizer and schedule of a run: AdamW over the model's parameters, cosine over the epochs. */
export function makeOptimizer(
  model: Model,
  s: RunSettings,
): { optimizer: AdamW; scheduler: CosineAnnealingLR } {
  const optimizer = new AdamW(model.parameters(), {
    lr: s.lr,
    betas: [0.9, 0.999],
    eps: 1e-8,
    weightDecay: s.weightDecay,
  });
  return { optimizer, scheduler: new CosineAnnealingLR(optimizer, { tMax: s.epochs }) };
}

/** Puts `model` in the mode the protocol evaluates in: training mode (batch statistics) or eval mode. */
export function evaluationMode(model: Model, protocol: Protocol): void {
  if (protocol === "clean") model.eval();
}

/** The model's stochastic-depth modules, in order (their generator states are part of a checkpoint). */
export function stochasticDepthModules(model: Model): StochasticDepth[] {
  return model.namedModules().map(([, m]) => m).filter((m): m is StochasticDepth =>
    m instanceof StochasticDepth
  );
}

/** What the loaders of a run read of its configuration (0 images = all). */
export interface DataSettings {
  batchSize: number;
  trainLimit: number;
  evalLimit: number;
  protocol: Protocol;
}

/**
 * The loaders of a run with `seed`: training shuffled and augmented, validation plain, or augmented like
 * training under the notebook's protocol, test plain.
 */
export function runLoaders(data: { train: CifarSet; test: CifarSet }, s: DataSettings, seed: number) {
  return makeLoaders(data, {
    batchSize: s.batchSize,
    seed,
    trainLimit: s.trainLimit || undefined,
    evalLimit: s.evalLimit || undefined,
    validationAugment: s.protocol === "notebook",
  });
}
