// The real layer shapes of the seven models: every leaf layer call of `buildModel(stage)`'s forward on a
// meta input [batch, 3, 32, 32] (`Module.summary`), grouped into distinct cases (same layer type,
// configuration and input shape).

import { buildModel, type ModelOptions, STAGES } from "../models/zoo.ts";
import { Conv2d } from "../nn/layers.ts";
import { type Module, onMeta } from "../nn/module.ts";
import { defaultConvVariant } from "../kernels/planner.ts";
import { convOutSize, type ConvShape } from "../kernels/shapes.ts";

export { STAGES };

/** Layers that do no work of their own (views, identities, stochastic depth at p = 0). */
const SKIP = new Set(["Flatten", "Identity", "StochasticDepth"]);

/** One distinct layer of the models at a batch size. */
export interface LayerCase {
  /**
   * Short human-readable name: the conv family and its configuration ("conv 1×1 64→256 @32×32",
   * "dwconv 7×7 128 @8×8"), else the op's name ("groupNorm 128 @16×16").
   */
  label: string;
  /** The autograd op the layer runs (conv2d, groupNorm, …): its reference's and registry entry's name. */
  op: string;
  /** Kind used by --filter and the report (convs by the planner's family): conv1x1, dwconv, patchconv, conv,
   * groupconv, norm, act, other. */
  kind: string;
  type: string;
  inShape: number[];
  outShape: number[];
  /** Forward FLOPs (2 × multiply-adds; 0 for non-conv/linear layers). */
  flops: number;
  /** Dotted module name of the first occurrence, and where it occurs: "final ×4, kernel7 ×3". */
  firstName: string;
  stage: string;
  uses: Record<string, number>;
  /** Whether the layer sees the network input (its input gradient is never computed in training). */
  isStem: boolean;
  conv?: {
    cin: number;
    cout: number;
    k: number;
    stride: number;
    padding: number;
    groups: number;
    bias: boolean;
  };
}

/** The convolution a Conv2d layer runs on `inShape`, in the planner's terms. */
export function convShapeOf(c: Conv2d, inShape: number[]): ConvShape {
  const [n, cin, h, w] = inShape;
  const { kernelSize: k, stride, padding: pad, groups } = c;
  return {
    n,
    c: cin,
    h,
    w,
    o: c.outChannels,
    k,
    stride,
    pad,
    groups,
    oh: convOutSize(h, k, stride, pad),
    ow: convOutSize(w, k, stride, pad),
  };
}

/** The autograd op a layer module runs: the name of its CPU reference, registry entry and tolerance. */
export function opOfLayer(type: string): string {
  const ops: Record<string, string> = {
    Conv2d: "conv2d",
    BatchNorm2d: "batchNorm2d",
    GroupNorm: "groupNorm",
    LayerNorm: "layerNorm",
    ReLU: "relu",
    GELU: "gelu",
    AdaptiveAvgPool2d: "adaptiveAvgPool2d",
    Linear: "linear",
    LayerScaler: "layerScale",
  };
  return ops[type] ?? type;
}

/** The bench's kind of a conv layer, from the family of the planner's forward variant. */
function convKind(c: Conv2d, inShape: number[]): string {
  const v = defaultConvVariant(convShapeOf(c, inShape), "forward");
  if (v.startsWith("gemm1x1/")) return "conv1x1";
  if (v.startsWith("depthwise/")) return "dwconv";
  if (v === "patches") return "patchconv";
  return c.groups === 1 ? "conv" : "groupconv";
}

function describe(
  type: string,
  m: Module,
  inShape: number[],
  outShape: number[],
): { label: string; kind: string } {
  const sp = (s: number[]) => (s.length === 4 ? `${s[2]}×${s[3]}` : `[${s.slice(1).join("×")}]`);
  if (m instanceof Conv2d) {
    const kind = convKind(m, inShape);
    const k = `${m.kernelSize}×${m.kernelSize}${m.stride > 1 ? `/${m.stride}` : ""}`;
    const name = kind === "dwconv" ? "dwconv" : kind === "groupconv" ? `gconv(g${m.groups})` : "conv";
    const ch = kind === "dwconv" ? `${m.inChannels}` : `${m.inChannels}→${m.outChannels}`;
    return { label: `${name} ${k} ${ch} @${sp(inShape)}`, kind };
  }
  const kind = /Norm/.test(type) ? "norm" : /ReLU|GELU|Softmax/.test(type) ? "act" : "other";
  const ch = inShape.length > 1 ? ` ${inShape[1]}` : "";
  return {
    label: `${opOfLayer(type)}${ch} @${sp(inShape)}${
      outShape.length !== inShape.length ? "→" + sp(outShape) : ""
    }`,
    kind,
  };
}

/** Distinct layer cases of `stages` at `batch`, in order of first appearance. */
export function layerCases(stages: readonly string[], batch: number, opts: ModelOptions = {}): LayerCase[] {
  const byKey = new Map<string, LayerCase>();
  for (const stage of stages) {
    const model = onMeta(() => buildModel(stage, opts));
    const mods = new Map(model.namedModules());
    const rows = model.summary([batch, opts.inChannels ?? 3, 32, 32]);
    rows.forEach((r, i) => {
      if (SKIP.has(r.type)) return;
      const m = mods.get(r.name);
      if (!m) return;
      const conv = m instanceof Conv2d
        ? {
          cin: m.inChannels,
          cout: m.outChannels,
          k: m.kernelSize,
          stride: m.stride,
          padding: m.padding,
          groups: m.groups,
          bias: m.hasBias,
        }
        : undefined;
      const paramShapes = Object.entries(m.stateSpec()).map(([n, t]) => `${n}:${t.shape.join("x")}`).join(
        ",",
      );
      const key = `${r.type}|${r.inShape.join("x")}|${r.outShape.join("x")}|${
        JSON.stringify(conv)
      }|${paramShapes}`;
      let c = byKey.get(key);
      if (!c) {
        const d = describe(r.type, m, r.inShape, r.outShape);
        c = {
          ...d,
          op: opOfLayer(r.type),
          type: r.type,
          inShape: r.inShape,
          outShape: r.outShape,
          flops: r.flops,
          firstName: r.name,
          stage,
          uses: {},
          isStem: i === 0,
          conv,
        };
        byKey.set(key, c);
      }
      c.uses[stage] = (c.uses[stage] ?? 0) + 1;
    });
  }
  return [...byKey.values()];
}
