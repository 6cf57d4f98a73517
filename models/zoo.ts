// The seven steps of the study as modules, structured exactly like the notebook's PyTorch classes
// (../shared/seed/convnext-notebook.txt) so that state-dict names, shapes and parameter counts are the
// notebook's: `encoder.stem.0.weight`, `encoder.stages.1.0.block.0.0.weight`,
// `encoder.stages.2.3.layer_scaler.gamma`, `head.3.weight`, …
//
// Steps 1–6 (`base` … `kernel7`) are the notebook's `ResNet(encoder=Encoder, decoder=Decoder)` with
// that step's `Stem` and `BottleNeckBlock`; step 7 (`final`) is `ConvNext(encoder, head)`.
//
// Softmax head: the notebook's steps 1–6 end in `F.softmax` and then train with CrossEntropyLoss,
// which applies log-softmax again (SEED.md quirk 1). `buildModel` reproduces that by default for
// steps 1–6 (`softmaxHead: true`), because the study's published accuracies were obtained with it;
// pass `softmaxHead: false` to get logits (the corrected model). `final` returns logits by default,
// like the notebook; `softmaxHead: true` appends a softmax to it too.

import { Rng } from "../autograd/random.ts";
import type { Tensor } from "../autograd/tensor.ts";
import { add } from "../autograd/ops/elementwise.ts";
import { reshape } from "../autograd/ops/shape.ts";
import { softmax } from "../autograd/ops/activation.ts";
import {
  AdaptiveAvgPool2d,
  BatchNorm2d,
  Conv2d,
  Flatten,
  GroupNorm,
  Identity,
  LayerNorm,
  Linear,
  ReLU,
  Sequential,
} from "../nn/layers.ts";
import { ConvNextBlock } from "../nn/convnext.ts";
import { Module } from "../nn/module.ts";
import { checkStage, type Stage, STAGES } from "./stages.ts";

export { STAGES };
export type { Stage };

/** Overrides of the notebook's configuration. */
export interface ModelOptions {
  /** Channels of the four stages (default [64, 128, 256, 512]). */
  widths?: number[];
  /** Blocks per stage (default: base [3,4,6,3], final [2,2,6,2], the others [3,3,9,3]). */
  depths?: number[];
  /** Channels after the stem (default 64). */
  stemFeatures?: number;
  /** Stochastic-depth rate of `final` (default 0, as every notebook run): stage i drops with
   * linspace(0, dropPath, sum(depths))[i] (the notebook's rule). Ignored by steps 1–6. */
  dropPath?: number;
  numClasses?: number;
  inChannels?: number;
  /** End in softmax (default true for steps 1–6 as in the notebook, false for `final`). */
  softmaxHead?: boolean;
  /** Seed of the initialisation (and of the stochastic-depth draws). Default 0. */
  seed?: number;
}

/** The resolved configuration of a built model. */
export interface ModelConfig {
  stage: Stage;
  widths: number[];
  depths: number[];
  stemFeatures: number;
  dropPath: number;
  numClasses: number;
  inChannels: number;
  softmaxHead: boolean;
  seed: number;
}

/** Default depths of each step as the notebook's code ran them. */
export function defaultDepths(stage: Stage): number[] {
  if (stage === "base") return [3, 4, 6, 3];
  if (stage === "final") return [2, 2, 6, 2];
  return [3, 3, 9, 3];
}

/** Fills in the notebook's defaults and validates the overrides. */
export function resolveConfig(stage: string, opts: ModelOptions = {}): ModelConfig {
  const s = checkStage(stage);
  const cfg: ModelConfig = {
    stage: s,
    widths: [...(opts.widths ?? [64, 128, 256, 512])],
    depths: [...(opts.depths ?? defaultDepths(s))],
    stemFeatures: opts.stemFeatures ?? 64,
    dropPath: opts.dropPath ?? 0,
    numClasses: opts.numClasses ?? 10,
    inChannels: opts.inChannels ?? 3,
    softmaxHead: opts.softmaxHead ?? s !== "final",
    seed: opts.seed ?? 0,
  };
  const posInt = (v: number) => Number.isInteger(v) && v > 0;
  if (!cfg.widths.length || !cfg.widths.every(posInt)) throw new Error(`widths must be positive integers`);
  if (cfg.depths.length !== cfg.widths.length || !cfg.depths.every(posInt)) {
    throw new Error(`depths [${cfg.depths}] must be ${cfg.widths.length} positive integers, one per width`);
  }
  for (const k of ["stemFeatures", "numClasses", "inChannels"] as const) {
    if (!posInt(cfg[k])) throw new Error(`${k} must be a positive integer, got ${cfg[k]}`);
  }
  if (!(cfg.dropPath >= 0 && cfg.dropPath < 1)) {
    throw new Error(`dropPath must be in [0, 1), got ${cfg.dropPath}`);
  }
  if (s === "final") {
    const total = cfg.depths.reduce((a, b) => a + b, 0);
    if (total < cfg.widths.length) {
      throw new Error(`final: sum(depths) = ${total} must be at least the number of stages (drop-path rule)`);
    }
  } else {
    // the notebook's stages 2+ stride their first block, whose shortcut is the identity when in == out
    for (let i = 1; i < cfg.widths.length; i++) {
      if (cfg.widths[i] === cfg.widths[i - 1]) {
        throw new Error(
          `${s}: consecutive widths must differ (a stage's strided first block needs a conv shortcut)`,
        );
      }
    }
    if (s !== "inverted" && s !== "kernel7") {
      for (const w of cfg.widths) {
        if (w % 4 !== 0) throw new Error(`${s}: widths must be multiples of 4, got ${w}`);
      }
    }
  }
  return cfg;
}

/** A model of the study: a module with its configuration. */
export abstract class Model extends Module {
  constructor(readonly config: ModelConfig) {
    super();
  }

  get stage(): Stage {
    return this.config.stage;
  }
}

// ---------------------------------------------------------------- steps 1–6

/** The notebook's utilConv: Conv2d(padding k//2) → BatchNorm2d → activation. */
class UtilConv extends Sequential {
  constructor(
    inF: number,
    outF: number,
    k: number,
    rng: Rng,
    { stride = 1, bias = true, groups = 1, act = true }: {
      stride?: number;
      bias?: boolean;
      groups?: number;
      act?: boolean;
    } = {},
  ) {
    super(
      new Conv2d(inF, outF, k, { stride, padding: Math.floor(k / 2), bias, groups, rng }),
      new BatchNorm2d(outF),
      act ? new ReLU() : new Identity(),
    );
  }

  override get typeName(): string {
    return "utilConv";
  }
}

/** BottleNeckBlock of steps 1–6: `block`, `shortcut`, `act`; out = relu(block(x) + shortcut(x)). */
class BottleNeckBlock extends Module {
  readonly block: Sequential;
  readonly shortcut: Module;
  readonly act: ReLU;

  constructor(stage: Stage, inF: number, outF: number, stride: number, rng: Rng) {
    super();
    let layers: UtilConv[];
    if (stage === "inverted") {
      const e = outF * 4;
      if (e % inF !== 0) throw new Error(`inverted: groups ${inF} must divide the ${e} expanded channels`);
      layers = [
        new UtilConv(inF, e, 1, rng, { stride, bias: false }),
        new UtilConv(e, e, 3, rng, { bias: false, groups: inF }),
        new UtilConv(e, outF, 1, rng, { bias: false, act: false }),
      ];
    } else if (stage === "kernel7") {
      const e = outF * 4;
      layers = [
        new UtilConv(inF, inF, 7, rng, { stride, bias: false, groups: inF }),
        new UtilConv(inF, e, 1, rng),
        new UtilConv(e, outF, 1, rng, { bias: false, act: false }),
      ];
    } else {
      const r = Math.floor(outF / 4);
      layers = [
        new UtilConv(inF, r, 1, rng, { stride, bias: false }),
        new UtilConv(r, r, 3, rng, { bias: false, groups: stage === "resnextify" ? r : 1 }),
        new UtilConv(r, outF, 1, rng, { bias: false, act: false }),
      ];
    }
    this.block = this.addModule("block", new Sequential(...layers));
    this.shortcut = this.addModule(
      "shortcut",
      inF !== outF
        ? new Sequential(new UtilConv(inF, outF, 1, rng, { stride, bias: false }))
        : new Identity(),
    );
    this.act = this.addModule("act", new ReLU());
  }

  forward(x: Tensor): Tensor {
    return this.act.forward(add(this.block.forward(x), this.shortcut.forward(x)));
  }
}

/** The notebook's Encoder: `stem`, then `stages` (a ModuleList, applied in order). */
class Encoder extends Module {
  readonly stem: Module;
  readonly stages: Sequential;

  constructor(stem: Module, stages: Module[]) {
    super();
    this.stem = this.addModule("stem", stem);
    this.stages = this.addModule("stages", new Sequential(...stages));
  }

  forward(x: Tensor): Tensor {
    return this.stages.forward(this.stem.forward(x));
  }
}

/** The notebook's Decoder of steps 1–6: `avg`, flatten, `decoder` (Linear), then softmax (optional). */
class Decoder extends Module {
  readonly avg: AdaptiveAvgPool2d;
  readonly decoder: Linear;

  constructor(inF: number, classes: number, readonly softmaxHead: boolean, rng: Rng) {
    super();
    this.avg = this.addModule("avg", new AdaptiveAvgPool2d(1));
    this.decoder = this.addModule("decoder", new Linear(inF, classes, { rng }));
  }

  forward(x: Tensor): Tensor {
    const p = this.avg.forward(x);
    const y = this.decoder.forward(reshape(p, [p.shape[0], -1]));
    return this.softmaxHead ? softmax(y, 1) : y;
  }
}

/** The notebook's ResNet (steps 1–6): `encoder`, `decoder`. */
class ResNet extends Model {
  readonly encoder: Encoder;
  readonly decoder: Decoder;

  constructor(cfg: ModelConfig) {
    super(cfg);
    const rng = new Rng(cfg.seed);
    const { stage, widths, depths, stemFeatures: stem, inChannels } = cfg;
    const stemModule = stage === "base" || stage === "stage_ratio"
      ? new Sequential(new UtilConv(inChannels, stem, 3, rng))
      : new Sequential(new Conv2d(inChannels, stem, 1, { stride: 1, rng }), new BatchNorm2d(stem));
    const stages: Module[] = [];
    widths.forEach((w, i) => {
      const inF = i === 0 ? stem : widths[i - 1];
      const stride = i === 0 ? 1 : 2;
      const blocks = [new BottleNeckBlock(stage, inF, w, stride, rng)];
      for (let d = 1; d < depths[i]; d++) blocks.push(new BottleNeckBlock(stage, w, w, 1, rng));
      stages.push(new Sequential(...blocks));
    });
    this.encoder = this.addModule("encoder", new Encoder(stemModule, stages));
    this.decoder = this.addModule(
      "decoder",
      new Decoder(widths[widths.length - 1], cfg.numClasses, cfg.softmaxHead, rng),
    );
  }

  forward(x: Tensor): Tensor {
    return this.decoder.forward(this.encoder.forward(x));
  }
}

// ---------------------------------------------------------------- step 7 (ConvNeXt)

// The block (dwconv7×7 → GroupNorm(1) → 1×1 (4C) → GELU → 1×1 (C) → layer scale → drop path → + x) is
// nn/convnext.ts ConvNextBlock, whose forward runs its fused ops with the planner's fusion choices.

/** The notebook's ConvNextEncoder: patchify `stem` (conv1×1 + BatchNorm) and `stages`. */
function convNextEncoder(cfg: ModelConfig, rng: Rng, dropRng: Rng): Encoder {
  const { widths, depths, stemFeatures: stem, inChannels } = cfg;
  const stemModule = new Sequential(
    new Conv2d(inChannels, stem, 1, { stride: 1, rng }),
    new BatchNorm2d(stem),
  );
  const total = depths.reduce((a, b) => a + b, 0);
  const dropProbs = linspaceF32(0, cfg.dropPath, total);
  const stages = widths.map((w, i) => {
    const inF = i === 0 ? stem : widths[i - 1];
    const p = dropProbs[i];
    const layers: Module[] = [];
    if (inF !== w) {
      layers.push(new Sequential(new GroupNorm(1, inF), new Conv2d(inF, w, 2, { stride: 2, rng })));
    }
    for (let d = 0; d < depths[i]; d++) layers.push(new ConvNextBlock(w, w, p, rng, dropRng));
    return new Sequential(...layers);
  });
  return new Encoder(stemModule, stages);
}

/** torch.linspace(start, end, steps) in float32 (PyTorch's CPU kernel), as Python floats (`.item()`). */
export function linspaceF32(start: number, end: number, steps: number): number[] {
  const f = Math.fround;
  const [s, e] = [f(start), f(end)];
  if (steps === 1) return [s];
  const step = f(f(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  return Array.from(
    { length: steps },
    (_, i) => (i < half ? f(s + f(step * i)) : f(e - f(step * (steps - 1 - i)))),
  );
}

/** The notebook's ConvNext: `encoder`, `head` = AdaptiveAvgPool2d → Flatten → LayerNorm → Linear. */
class ConvNext extends Model {
  readonly encoder: Encoder;
  readonly head: Sequential;

  constructor(cfg: ModelConfig) {
    super(cfg);
    const rng = new Rng(cfg.seed);
    const dropRng = new Rng((cfg.seed ^ 0x5bd1e995) >>> 0);
    const c = cfg.widths[cfg.widths.length - 1];
    this.encoder = this.addModule("encoder", convNextEncoder(cfg, rng, dropRng));
    this.head = this.addModule(
      "head",
      new Sequential(
        new AdaptiveAvgPool2d(1),
        new Flatten(1),
        new LayerNorm(c),
        new Linear(c, cfg.numClasses, { rng }),
      ),
    );
  }

  forward(x: Tensor): Tensor {
    const y = this.head.forward(this.encoder.forward(x));
    return this.config.softmaxHead ? softmax(y, 1) : y;
  }
}

// ---------------------------------------------------------------- builder

/**
 * Builds step `stage` of the study with the notebook's configuration, or overrides. Parameters are
 * initialised like PyTorch's defaults from a generator seeded with `seed`. Build inside
 * `onMeta(...)` to get shapes only: parameter and FLOP counts (`summary()`) without GPU memory, and a
 * forward and backward on meta tensors inside `dryRun(...)`.
 */
export function buildModel(stage: Stage | string, opts: ModelOptions = {}): Model {
  const cfg = resolveConfig(stage, opts);
  return cfg.stage === "final" ? new ConvNext(cfg) : new ResNet(cfg);
}
