// ConvNeXt's pointwise MLP, conv 1×1 (expand, bias) → GELU → conv 1×1 (project, bias), as one
// differentiable op, so that GELU costs no pass of its own:
//   forward   pre = w1·x + b1 and h = gelu(pre) in the expand GEMM's store ("bias-gelu"),
//             y = w2·h + b2 (bias in the project GEMM's store, as ever);
//   backward  dpre = (w2ᵀ·dy) · gelu'(pre) in the store of the project conv's input-gradient GEMM
//             ("gelu-backward"), dw2 = Σ dy·hᵀ, db2; then dx = w1ᵀ·dpre, dw1 = Σ dpre·xᵀ, db1.
// One tape node (not two ops sharing saved tensors): the backward needs pre (for gelu') and h (for
// dw2) — exactly what the unfused conv → GELU → conv chain saves — and one node keeps them owned by
// one rule and freed with it. Each pass is planned like conv2d plans it (same layers, same order), so
// the plan log lists every pass. The fusions are the caller's choice (options `biasGelu`, `geluBackward`,
// on unless false; nn/convnext.ts passes the planner's): one switched off ("fuse.bias-gelu=off",
// "fuse.gelu-backward=off") runs that part as the unfused kernels (GEMM, then a GELU pass). GEMM variants
// without an epilogue (vec4, scalar) fall back the same way inside kernels/conv1x1.ts.

import { geluBackward, geluForward } from "../../kernels/activation.ts";
import { convBackwardBias, convBackwardInput, convBackwardWeight, convForward } from "../../kernels/conv.ts";
import { conv1x1BackwardInputGeluGrad, conv1x1ForwardGelu } from "../../kernels/conv1x1.ts";
import { planConv } from "../../kernels/planner.ts";
import { currentModule, empty, gradOutput, isGradEnabled, record, type Tensor } from "../tensor.ts";
import { conv2dShape } from "./conv.ts";

export interface PointwiseMlpOptions {
  /** Layer names of the expand and project convs in the plan log (default: the current module). */
  layers?: [string, string];
  /** Fusion "bias-gelu": bias + GELU in the expand GEMM's store (default on). */
  biasGelu?: boolean;
  /** Fusion "gelu-backward": GELU's backward in the project input-gradient GEMM's store (default on). */
  geluBackward?: boolean;
}

/**
 * conv2d(gelu(conv2d(x, w1, b1)), w2, b2) for 1×1 weights w1 [E, C, 1, 1], w2 [O, E, 1, 1], with the
 * GELU fused into the GEMMs (see above). Gradients flow to every input that requires one.
 */
export function pointwiseMlp(
  x: Tensor,
  w1: Tensor,
  b1: Tensor | null,
  w2: Tensor,
  b2: Tensor | null,
  opts: PointwiseMlpOptions = {},
): Tensor {
  const s1 = conv2dShape(x, w1, b1);
  if (s1.k !== 1) throw new Error(`pointwiseMlp: the expand weight must be 1×1 (${w1.describe()})`);
  const [l1, l2] = opts.layers ?? [currentModule(), currentModule()];
  const grad = isGradEnabled();
  const first = [x, w1, ...(b1 ? [b1] : [])], second = [w2, ...(b2 ? [b2] : [])];
  // whether the tape would track the expand conv's output (h), and the project conv's
  const track1 = grad && first.some((t) => t.requiresGrad);
  const track2 = grad && (track1 || second.some((t) => t.requiresGrad));
  const fuseFwd = opts.biasGelu !== false, fuseBwd = opts.geluBackward !== false;
  const fwd1 = planConv(s1, "forward", l1, fuseFwd ? "gelu" : undefined).variant;
  const ig1 = track1 && x.requiresGrad ? planConv(s1, "inputGrad", l1).variant : "";
  const wg1 = track1 && w1.requiresGrad ? planConv(s1, "weightGrad", l1).variant : "";
  const h = empty([s1.n, s1.o, s1.oh, s1.ow]);
  const s2 = conv2dShape(h, w2, b2);
  if (s2.k !== 1) throw new Error(`pointwiseMlp: the project weight must be 1×1 (${w2.describe()})`);
  const fwd2 = planConv(s2, "forward", l2).variant;
  const ig2 = track2 && track1 ? planConv(s2, "inputGrad", l2, fuseBwd ? "dgelu" : undefined).variant : "";
  const wg2 = track2 && w2.requiresGrad ? planConv(s2, "weightGrad", l2).variant : "";

  // forward: pre is kept only for the backward through the GELU (or written by the unfused path)
  const pre = track1 || !fuseFwd ? empty(h.shape) : null;
  const b1b = b1 ? b1.binding() : null;
  if (fuseFwd) {
    conv1x1ForwardGelu(x.binding(), w1.binding(), b1b, pre?.binding() ?? null, h.binding(), s1, fwd1);
  } else {
    convForward(x.binding(), w1.binding(), b1b, pre!.binding(), s1, fwd1);
    geluForward(pre!.binding(), h.binding(), h.size);
  }
  const y = empty([s2.n, s2.o, s2.oh, s2.ow]);
  convForward(h.binding(), w2.binding(), b2 ? b2.binding() : null, y.binding(), s2, fwd2);

  const inputs = [...first, ...second];
  const saved = pre ? [pre, h] : [h];
  return record(y, inputs, (g) => {
    const grads = new Map<Tensor, Tensor | null>();
    // project conv: dpre (through the GELU), dw2, db2
    let dpre: Tensor | null = null;
    if (track1) {
      dpre = empty(h.shape);
      if (fuseBwd) {
        conv1x1BackwardInputGeluGrad(g.binding(), w2.binding(), pre!.binding(), dpre.binding(), s2, ig2);
      } else {
        const dh = empty(h.shape);
        convBackwardInput(g.binding(), w2.binding(), dh.binding(), s2, ig2);
        geluBackward(dh.binding(), pre!.binding(), dpre.binding(), h.size);
        dh.dispose();
      }
    }
    // each weight gradient with its bias gradient (in the same kernel where the variant can)
    const gb2 = b2?.requiresGrad ? grads.set(b2, gradOutput(b2)).get(b2)!.binding() : null;
    if (w2.requiresGrad) {
      const gw = grads.set(w2, gradOutput(w2)).get(w2)!;
      convBackwardWeight(g.binding(), h.binding(), gw.binding(), s2, wg2, gb2);
    } else if (gb2) convBackwardBias(g.binding(), gb2, s2);
    // expand conv: dx, dw1, db1 from dpre
    if (dpre) {
      if (x.requiresGrad) {
        const gx = grads.set(x, empty(x.shape)).get(x)!;
        convBackwardInput(dpre.binding(), w1.binding(), gx.binding(), s1, ig1);
      }
      const gb1 = b1?.requiresGrad ? grads.set(b1, gradOutput(b1)).get(b1)!.binding() : null;
      if (w1.requiresGrad) {
        const gw = grads.set(w1, gradOutput(w1)).get(w1)!;
        convBackwardWeight(dpre.binding(), x.binding(), gw.binding(), s1, wg1, gb1);
      } else if (gb1) convBackwardBias(dpre.binding(), gb1, s1);
      dpre.dispose();
    }
    return inputs.map((t) => grads.get(t) ?? null);
  }, saved);
}
