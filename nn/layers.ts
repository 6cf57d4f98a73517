// The layers of the seven models, with PyTorch's parameter names, shapes and default initialisation.
// Convolutions and linear layers also count their FLOPs (2 × multiply-adds) for `Module.summary()` and
// `deno task info`; shapes come from running the layers themselves (on meta tensors). The norms pass the
// planner's fusion choices to their ops (nn/fusions.ts).

import type { Rng } from "../autograd/random.ts";
import { numel, type Tensor } from "../autograd/tensor.ts";
import { mul, relu } from "../autograd/ops/elementwise.ts";
import { flatten, reshape } from "../autograd/ops/shape.ts";
import { conv2d } from "../autograd/ops/conv.ts";
import { batchNorm2d, groupNorm, layerNorm } from "../autograd/ops/norm.ts";
import { gelu } from "../autograd/ops/activation.ts";
import { adaptiveAvgPool2d } from "../autograd/ops/pool.ts";
import { linear } from "../autograd/ops/linear.ts";
import { stochasticDepth } from "../autograd/ops/stochastic.ts";
import { constant, defaultBias, defaultWeight, fanIn } from "./init.ts";
import { defaultRng, Module } from "./module.ts";
import { planFusions } from "./fusions.ts";

function need(cond: boolean, msg: string): void {
  if (!cond) throw new Error(msg);
}

/** Options of `Conv2d` (PyTorch's defaults: stride 1, padding 0, groups 1, bias). */
export interface Conv2dOptions {
  stride?: number;
  padding?: number;
  groups?: number;
  bias?: boolean;
  rng?: Rng;
}

/** nn.Conv2d: weight [out, in/groups, k, k] (OIHW), optional bias [out]. */
export class Conv2d extends Module {
  readonly stride: number;
  readonly padding: number;
  readonly groups: number;
  readonly hasBias: boolean;

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    opts: Conv2dOptions = {},
  ) {
    super();
    const { stride = 1, padding = 0, groups = 1, bias = true } = opts;
    need(
      inChannels % groups === 0 && outChannels % groups === 0,
      `Conv2d: groups ${groups} must divide in_channels ${inChannels} and out_channels ${outChannels}`,
    );
    this.stride = stride;
    this.padding = padding;
    this.groups = groups;
    this.hasBias = bias;
    const rng = opts.rng ?? defaultRng();
    const shape = [outChannels, inChannels / groups, kernelSize, kernelSize];
    this.addParameter("weight", shape, () => defaultWeight(shape, rng));
    if (bias) this.addParameter("bias", [outChannels], () => defaultBias(outChannels, fanIn(shape), rng));
  }

  get weight(): Tensor {
    return this.param("weight");
  }

  get bias(): Tensor | null {
    return this.hasBias ? this.param("bias") : null;
  }

  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, {
      stride: this.stride,
      padding: this.padding,
      groups: this.groups,
    });
  }

  /** in/groups · k² multiply-adds per output value. */
  override layerFlops(_input: readonly number[], output: readonly number[]): number {
    return 2 * numel(output) * (this.inChannels / this.groups) * this.kernelSize ** 2;
  }
}

/** nn.Linear: weight [out, in], bias [out]. */
export class Linear extends Module {
  readonly hasBias: boolean;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    opts: { bias?: boolean; rng?: Rng } = {},
  ) {
    super();
    const rng = opts.rng ?? defaultRng();
    this.hasBias = opts.bias ?? true;
    const shape = [outFeatures, inFeatures];
    this.addParameter("weight", shape, () => defaultWeight(shape, rng));
    if (this.hasBias) {
      this.addParameter("bias", [outFeatures], () => defaultBias(outFeatures, inFeatures, rng));
    }
  }

  get weight(): Tensor {
    return this.param("weight");
  }

  get bias(): Tensor | null {
    return this.hasBias ? this.param("bias") : null;
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }

  /** in · out multiply-adds per row of the input. */
  override layerFlops(input: readonly number[]): number {
    return 2 * (numel(input) / this.inFeatures) * this.inFeatures * this.outFeatures;
  }
}

/**
 * nn.BatchNorm2d: weight (1), bias (0), buffers running_mean (0), running_var (1) and
 * num_batches_tracked. Training mode normalises with the batch statistics and updates the running
 * ones on the GPU (momentum 0.1, unbiased variance); eval mode uses the running ones.
 * `num_batches_tracked` is a host-side count (incremented per training forward), exported in the
 * state dict as one value (and written to safetensors as an I64 scalar, like PyTorch).
 */
export class BatchNorm2d extends Module {
  numBatchesTracked = 0;

  constructor(readonly numFeatures: number, readonly eps = 1e-5, readonly momentum = 0.1) {
    super();
    const c = numFeatures;
    this.addParameter("weight", [c], () => constant(c, 1));
    this.addParameter("bias", [c], () => constant(c, 0));
    this.addBuffer("running_mean", [c], () => constant(c, 0));
    this.addBuffer("running_var", [c], () => constant(c, 1));
    this.addCounter("num_batches_tracked", {
      get: () => this.numBatchesTracked,
      set: (v) => (this.numBatchesTracked = v),
    });
  }

  get runningMean(): Tensor {
    return this.buffer("running_mean");
  }

  get runningVar(): Tensor {
    return this.buffer("running_var");
  }

  forward(x: Tensor): Tensor {
    if (this.training) this.numBatchesTracked++;
    return batchNorm2d(
      x,
      this.runningMean,
      this.runningVar,
      this.param("weight"),
      this.param("bias"),
      this.training,
      this.momentum,
      this.eps,
      planFusions(),
    );
  }
}

/** nn.GroupNorm(numGroups, numChannels): weight (1), bias (0) of shape [C]. */
export class GroupNorm extends Module {
  constructor(readonly numGroups: number, readonly numChannels: number, readonly eps = 1e-5) {
    super();
    need(
      numChannels % numGroups === 0,
      `GroupNorm: ${numGroups} groups do not divide ${numChannels} channels`,
    );
    this.addParameter("weight", [numChannels], () => constant(numChannels, 1));
    this.addParameter("bias", [numChannels], () => constant(numChannels, 0));
  }

  get weight(): Tensor {
    return this.param("weight");
  }

  get bias(): Tensor {
    return this.param("bias");
  }

  forward(x: Tensor): Tensor {
    return groupNorm(x, this.numGroups, this.weight, this.bias, this.eps, planFusions());
  }
}

/** nn.LayerNorm(normalizedShape) over the last dimension: weight (1), bias (0). */
export class LayerNorm extends Module {
  constructor(readonly normalizedShape: number, readonly eps = 1e-5) {
    super();
    this.addParameter("weight", [normalizedShape], () => constant(normalizedShape, 1));
    this.addParameter("bias", [normalizedShape], () => constant(normalizedShape, 0));
  }

  forward(x: Tensor): Tensor {
    const [w, b] = [this.param("weight"), this.param("bias")];
    return layerNorm(x, [this.normalizedShape], w, b, this.eps, planFusions());
  }
}

export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}

/** nn.GELU() (exact erf form). */
export class GELU extends Module {
  forward(x: Tensor): Tensor {
    return gelu(x);
  }
}

export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}

/** nn.AdaptiveAvgPool2d((1, 1)): [N, C, H, W] → [N, C, 1, 1] (only output size 1 is supported). */
export class AdaptiveAvgPool2d extends Module {
  constructor(readonly outputSize = 1) {
    super();
    need(outputSize === 1, `AdaptiveAvgPool2d: only output size 1 is supported, got ${outputSize}`);
  }

  forward(x: Tensor): Tensor {
    return adaptiveAvgPool2d(x, 1);
  }
}

/** nn.Flatten(startDim = 1, endDim = -1). */
export class Flatten extends Module {
  constructor(readonly startDim = 1, readonly endDim = -1) {
    super();
  }

  forward(x: Tensor): Tensor {
    return flatten(x, this.startDim, this.endDim);
  }
}

/** The notebook's LayerScaler: parameter `gamma` [C] (init `initValue`, 1e-6), output gamma[:,None,None]·x. */
export class LayerScaler extends Module {
  constructor(readonly initValue: number, readonly dimensions: number) {
    super();
    this.addParameter("gamma", [dimensions], () => constant(dimensions, initValue));
  }

  get gamma(): Tensor {
    return this.param("gamma");
  }

  forward(x: Tensor): Tensor {
    need(
      x.rank === 4 && x.shape[1] === this.dimensions,
      `LayerScaler(${this.dimensions}): input ${x.describe()}`,
    );
    return mul(reshape(this.gamma, [this.dimensions, 1, 1]), x);
  }
}

/**
 * torchvision's StochasticDepth(p, mode="batch"): in training, drops the whole input for the whole
 * batch with probability p, else scales it by 1/(1−p); the identity in eval mode or when p = 0.
 */
export class StochasticDepth extends Module {
  readonly rng: Rng;

  constructor(readonly p: number, rng?: Rng) {
    super();
    need(p >= 0 && p <= 1, `StochasticDepth: p must be in [0, 1], got ${p}`);
    this.rng = rng ?? defaultRng();
  }

  forward(x: Tensor): Tensor {
    if (!this.training || this.p === 0) return x;
    return stochasticDepth(x, this.p, this.training, this.rng);
  }
}

/** nn.Sequential: children named "0", "1", …, applied in order. */
export class Sequential extends Module {
  readonly layers: Module[];

  constructor(...layers: Module[]) {
    super();
    this.layers = layers;
    layers.forEach((m, i) => this.addModule(String(i), m));
  }

  get length(): number {
    return this.layers.length;
  }

  at(i: number): Module {
    return this.layers[i < 0 ? i + this.layers.length : i];
  }

  forward(x: Tensor): Tensor {
    let y = x;
    for (const m of this.layers) y = m.forward(y);
    return y;
  }
}
