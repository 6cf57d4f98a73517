// Differentiable adaptive average pooling (torch.nn.functional.adaptive_avg_pool2d) over NCHW.

import { adaptiveAvgPoolBackward, adaptiveAvgPoolForward, type PoolDims } from "../../kernels/pool.ts";
import { empty, record, type Tensor } from "../tensor.ts";

/**
 * Average pooling of `x` [N, C, H, W] to `outputSize` (a number for a square output, or [OH, OW])
 * with PyTorch's adaptive windows; `adaptiveAvgPool2d(x, 1)` is the global average [N, C, 1, 1].
 */
export function adaptiveAvgPool2d(x: Tensor, outputSize: number | [number, number]): Tensor {
  const op = "adaptiveAvgPool2d";
  if (x.rank !== 4) throw new Error(`${op}: expects an input [N, C, H, W], got ${x.describe()}`);
  const [oh, ow] = typeof outputSize === "number" ? [outputSize, outputSize] : outputSize;
  if (![oh, ow].every((v) => Number.isInteger(v) && v >= 1)) {
    throw new Error(`${op}: output size ${JSON.stringify(outputSize)} must be positive integers`);
  }
  const [n, c, h, w] = x.shape;
  if (h === 0 || w === 0) throw new Error(`${op}: empty spatial dims in ${x.describe()}`);
  const d: PoolDims = { planes: n * c, h, w, oh, ow };
  const out = empty([n, c, oh, ow]);
  adaptiveAvgPoolForward(x.binding(), out.binding(), d);
  return record(out, [x], (g) => {
    const dx = empty(x.shape);
    adaptiveAvgPoolBackward(g.binding(), dx.binding(), d);
    return [dx];
  });
}
