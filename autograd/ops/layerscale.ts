// ConvNeXt's residual tail x + γ[c]·branch (layer scale, identity drop path, residual add) as one
// differentiable op with one kernel forward and one backward (kernels/layerscale.ts). Equal to
// add(mul(reshape(γ, [C, 1, 1]), branch), x), which runs when the fusion is off.

import {
  layerScaleResidualBackward,
  layerScaleResidualForward,
  type LayerScaleShape,
} from "../../kernels/layerscale.ts";
import { empty, gradOutput, record, sameShape, type Tensor } from "../tensor.ts";

/** x + γ[c]·branch for x, branch [N, C, H, W] and γ [C]. */
export function layerScaleResidual(x: Tensor, gamma: Tensor, branch: Tensor): Tensor {
  if (
    x.rank !== 4 || !sameShape(x.shape, branch.shape) || gamma.rank !== 1 || gamma.shape[0] !== x.shape[1]
  ) {
    throw new Error(
      `layerScaleResidual: x and branch must be the same [N, C, H, W] and γ [C]; got x ${x.describe()}, ` +
        `branch ${branch.describe()}, γ ${gamma.describe()}`,
    );
  }
  const [n, c, h, w] = x.shape;
  const s: LayerScaleShape = { n, c, p: h * w };
  const out = empty(x.shape);
  layerScaleResidualForward(x.binding(), gamma.binding(), branch.binding(), out.binding(), s);
  return record(out, [x, gamma, branch], (g) => {
    let dbranch: Tensor | null = null, dgamma: Tensor | null = null;
    if (gamma.requiresGrad || branch.requiresGrad) {
      // one pass gives both; the one nobody needs is dropped by the tape
      dbranch = empty(branch.shape);
      dgamma = gamma.requiresGrad ? gradOutput(gamma) : empty(gamma.shape);
      layerScaleResidualBackward(
        g.binding(),
        branch.binding(),
        gamma.binding(),
        dbranch.binding(),
        dgamma.binding(),
        s,
      );
    }
    return [x.requiresGrad ? g : null, dgamma, dbranch];
  });
}
