// ConvNeXt's block as modules that run the block body's fused ops (autograd/ops/convnext_block.ts)
// with the planner's fusion choices, asked once per forward (nn/fusions.ts). The module tree is the
// notebook's: `block` (a Sequential: dwconv 7×7, GroupNorm(1), 1×1 expand, GELU, 1×1 project),
// `layer_scaler`, `drop_path`; every parameter has its name. Where one op does the work of several
// children, each child is still entered in order (`forwardAs`), so traces and plans list each under
// its own name and type.

import type { Rng } from "../autograd/random.ts";
import { currentModule, type Tensor } from "../autograd/tensor.ts";
import { add } from "../autograd/ops/elementwise.ts";
import { convGroupNorm, layerScaleResidual, pointwiseMlp } from "../autograd/ops/convnext_block.ts";
import { Conv2d, GELU, GroupNorm, LayerScaler, Sequential, StochasticDepth } from "./layers.ts";
import { forwardAs, isLeafWalk, Module } from "./module.ts";
import { planFusions } from "./fusions.ts";

const handOn = (x: Tensor) => x;

/**
 * A ConvNeXt block's `block` Sequential: dwconv → GroupNorm → [1×1 → GELU → 1×1]. Its forward runs
 * dwconv → GroupNorm as one op (convGroupNorm) when "depthwise-norm-stats" is on, and the bracket as one
 * op (pointwiseMlp) unless both "bias-gelu" and "gelu-backward" are off; a child whose work an earlier
 * op did hands its input on. A dry run without a tape is `summary()`, whose rows need each module's own
 * output shape (and which has no GPU work fusion could save): it runs module by module.
 */
export class ConvNextBlockBody extends Sequential {
  readonly dwconv: Conv2d;
  readonly norm: GroupNorm;
  readonly expand: Conv2d;
  readonly gelu: GELU;
  readonly project: Conv2d;

  constructor(inF: number, outF: number, rng: Rng) {
    const e = outF * 4;
    const parts = [
      new Conv2d(inF, inF, 7, { padding: 3, bias: false, groups: inF, rng }),
      new GroupNorm(1, inF),
      new Conv2d(inF, e, 1, { rng }),
      new GELU(),
      new Conv2d(e, outF, 1, { rng }),
    ] as const;
    super(...parts);
    [this.dwconv, this.norm, this.expand, this.gelu, this.project] = parts;
  }

  override get typeName(): string {
    return "Sequential";
  }

  override forward(x: Tensor): Tensor {
    if (isLeafWalk()) return super.forward(x);
    const { dwconv: dw, norm, expand, gelu, project } = this;
    const f = planFusions();
    let h: Tensor;
    if (f.depthwiseNormStats) {
      const conv = { stride: dw.stride, padding: dw.padding, groups: dw.groups };
      const gn = { groups: norm.numGroups, weight: norm.weight, bias: norm.bias, eps: norm.eps };
      h = forwardAs(norm, forwardAs(dw, x, (v) => convGroupNorm(v, dw.weight, dw.bias, conv, gn, f)), handOn);
    } else h = norm.forward(dw.forward(x));
    if (!f.biasGelu && !f.geluBackward) return project.forward(gelu.forward(expand.forward(h)));
    // the project conv's layer name in the plan log ("" when untraced, as for every module then)
    const base = currentModule();
    const projectName = base ? `${base}.4` : "";
    const y = forwardAs(
      expand,
      h,
      (v) =>
        pointwiseMlp(v, expand.weight, expand.bias, project.weight, project.bias, {
          layers: [currentModule(), projectName],
          biasGelu: f.biasGelu,
          geluBackward: f.geluBackward,
        }),
    );
    return forwardAs(project, forwardAs(gelu, y, handOn), handOn);
  }
}

/**
 * The ConvNeXt block: dwconv7×7 → GroupNorm(1) → 1×1 (4C) → GELU → 1×1 (C) → layer scale → drop path
 * → + x. Where the drop path is the identity and "layerscale-residual" is on, the layer scaler returns
 * x + γ·branch in one fused pass (layerScaleResidual); the drop path still runs, so traces list it.
 */
export class ConvNextBlock extends Module {
  readonly block: ConvNextBlockBody;
  readonly layerScaler: LayerScaler;
  readonly dropPath: StochasticDepth;

  constructor(inF: number, outF: number, dropP: number, rng: Rng, dropRng: Rng) {
    super();
    this.block = this.addModule("block", new ConvNextBlockBody(inF, outF, rng));
    this.layerScaler = this.addModule("layer_scaler", new LayerScaler(1e-6, outF));
    this.dropPath = this.addModule("drop_path", new StochasticDepth(dropP, dropRng));
  }

  forward(x: Tensor): Tensor {
    const branch = this.block.forward(x);
    const { layerScaler: ls, dropPath } = this;
    if ((!dropPath.training || dropPath.p === 0) && planFusions().layerscaleResidual) {
      return dropPath.forward(forwardAs(ls, branch, (b) => layerScaleResidual(x, ls.gamma, b)));
    }
    return add(dropPath.forward(ls.forward(branch)), x);
  }
}
