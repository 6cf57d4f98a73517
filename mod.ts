// Public API of the engine.

export {
  checked,
  commandStats,
  flush,
  gpu,
  type GPUContext,
  pipelineCacheSize,
  poolStats,
  sync,
} from "./kernels/runtime.ts";
// Deno's initGPU (wgpu's primary backends unless DENO_WEBGPU_BACKEND says otherwise; see experiments/host.ts)
export { initGPU } from "./experiments/host.ts";
export { Rng } from "./autograd/random.ts";
export {
  backward,
  clone,
  empty,
  full,
  isGradEnabled,
  keep,
  noGrad,
  ones,
  rand,
  randn,
  scope,
  Tensor,
  tensor,
  type TensorOptions,
  zeros,
} from "./autograd/tensor.ts";
export { add, addInPlace, mul, neg, relu, scale, sub } from "./autograd/ops/elementwise.ts";
export { mean, type ReduceOptions, sum, sumTo } from "./autograd/ops/reduce.ts";
export { matmul, matmulT } from "./autograd/ops/matmul.ts";
export { flatten, reshape } from "./autograd/ops/shape.ts";
export * as F from "./autograd/functional.ts";
export { conv2d } from "./autograd/ops/conv.ts";
export { batchNorm2d, groupNorm, layerNorm } from "./autograd/ops/norm.ts";
export { gelu, softmax } from "./autograd/ops/activation.ts";
export { crossEntropy } from "./autograd/ops/loss.ts";
export { adaptiveAvgPool2d } from "./autograd/ops/pool.ts";
export { linear } from "./autograd/ops/linear.ts";
export { stochasticDepth } from "./autograd/ops/stochastic.ts";

export { AdamW, type AdamWOptions, CosineAnnealingLR } from "./nn/optim.ts";
export { manualSeed, Module, type StateDict } from "./nn/module.ts";
export * as nn from "./nn/layers.ts";
export {
  loadModel,
  loadSafetensors,
  saveModel,
  saveSafetensors,
  writeFileAtomic,
} from "./experiments/files.ts";
export {
  checkFinite,
  DamagedFileError,
  decodeModel,
  decodeSafetensors,
  encodeModel,
  encodeSafetensors,
  readSafetensors,
  sealSafetensors,
} from "./nn/safetensors.ts";
export { buildModel, type Model, type ModelOptions, STAGES } from "./models/zoo.ts";
export { findCifar10, loadCifar10, openCifar10 } from "./data/cifar10.ts";
export { CifarLoader, makeLoaders, makeSplits } from "./data/loader.ts";
