// The functional API, named like torch.nn.functional (in camelCase); exported from mod.ts as `F`.

export { add, mul, neg, relu, scale, sub } from "./ops/elementwise.ts";
export { mean, sum } from "./ops/reduce.ts";
export { matmul } from "./ops/matmul.ts";
export { flatten, reshape } from "./ops/shape.ts";
export { conv2d } from "./ops/conv.ts";
export { batchNorm2d, groupNorm, layerNorm } from "./ops/norm.ts";
export { gelu, softmax } from "./ops/activation.ts";
export { crossEntropy } from "./ops/loss.ts";
export { adaptiveAvgPool2d } from "./ops/pool.ts";
export { linear } from "./ops/linear.ts";
export { stochasticDepth } from "./ops/stochastic.ts";
