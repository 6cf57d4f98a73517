// The engine's browser entry: everything the page uses, from the Deno-free layers only (kernels/,
// autograd/, nn/, the model builders, the batch loader and the training core, training/). Files,
// environment and CLI stay in data/ and experiments/ on the Deno side; the page gets CIFAR-10 and
// checkpoints as bytes.

export { gpu, type GPUContext, initGPU, sync } from "../kernels/runtime.ts";
export { planOverride, setPlanOverride } from "../kernels/planner.ts";
export { Rng } from "../autograd/random.ts";
export { keep, noGrad, scope, Tensor, tensor } from "../autograd/tensor.ts";
export { crossEntropy } from "../autograd/ops/loss.ts";
export { AdamW, CosineAnnealingLR } from "../nn/optim.ts";
export { onMeta, readMany } from "../nn/module.ts";
export {
  checkStateFits,
  decodeSafetensors,
  encodeSafetensors,
  moduleTensors,
  type SafetensorsFile,
  type TensorEntry,
} from "../nn/safetensors.ts";
export { buildModel, type Model, type ModelOptions } from "../models/zoo.ts";
export { checkStage, NARROW, type Stage, STAGES } from "../models/stages.ts";
export { CifarLoader, makeSplits } from "../data/loader.ts";
export { CIFAR10, CIFAR10_CLASSES, type CifarSet, IMAGE_BYTES, RECORD_BYTES } from "../data/cifar10_spec.ts";
export { GpuMetrics, type MetricSums } from "../training/metrics.ts";
export { trainStep } from "../training/step.ts";
export { evaluateAccuracy } from "../training/evaluate.ts";
export { buildRunModel, evaluationMode, makeOptimizer } from "../training/recipe.ts";
export { compileRunKernels } from "../training/compile.ts";
export {
  type CheckpointParts,
  decodeCheckpoint,
  encodeCheckpoint,
  loadModelPart,
} from "../training/checkpoint_bytes.ts";
