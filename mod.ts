// Public API of the engine.

export {
  checked,
  commandStats,
  flush,
  gpu,
  type GPUContext,
  initGPU,
  pipelineCacheSize,
  poolStats,
  sync,
} from "./kernels/runtime.ts";
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
