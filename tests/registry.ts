// The op registry: every differentiable op registered once with the shapes it is checked on (odd
// sizes; sizes where the vec4 and texture variants apply), its GPU function (the autograd op), its f64
// CPU reference (forward; backward where kernels/reference/ has one, else the runner takes finite
// differences of the forward), the PyTorch fixture cases it replays (tests/fixtures/*.json) and its
// expected plan: the variants the planner lists for each pass of each shape, and the fusions on its path.
// tests/registry_sweep.ts runs it all (from tests/registry_conv_test.ts and tests/registry_test.ts):
// every variant of every pass, forced through the planner's override, and every fusion on and off.
// A new op, variant or fusion is registered here.

import { conv2d } from "../autograd/ops/conv.ts";
import { convGroupNorm } from "../autograd/ops/convnext_block.ts";
import { gelu, softmax } from "../autograd/ops/activation.ts";
import { add, mul, relu } from "../autograd/ops/elementwise.ts";
import { layerScaleResidual } from "../autograd/ops/layerscale.ts";
import { linear } from "../autograd/ops/linear.ts";
import { crossEntropy } from "../autograd/ops/loss.ts";
import { matmulT } from "../autograd/ops/matmul.ts";
import { pointwiseMlp } from "../autograd/ops/pointwise_mlp.ts";
import { batchNorm2d, groupNorm, layerNorm } from "../autograd/ops/norm.ts";
import { adaptiveAvgPool2d } from "../autograd/ops/pool.ts";
import { reshape } from "../autograd/ops/shape.ts";
import type { Rng } from "../autograd/random.ts";
import type { Tensor } from "../autograd/tensor.ts";
import { planFusions } from "../nn/fusions.ts";
import { type ConvPass, convVariants, fusionEnabled, matmulVariants } from "../kernels/planner.ts";
import type { MatmulDims } from "../kernels/shapes.ts";
import type { Arr, ConvCase as ConvFixture, OpCase as OpsFixture } from "../checks/golden_cases.ts";
import {
  conv2dBackwardBiasRef,
  conv2dBackwardInputRef,
  conv2dBackwardWeightRef,
  conv2dRef,
  convShape,
} from "../kernels/reference/conv.ts";
import { matmulBackwardRef, matmulRef } from "../kernels/reference/matmul.ts";
import {
  layerScaleBackwardRef,
  layerScaleRef,
  layerScaleResidualBackwardRef,
  layerScaleResidualRef,
} from "../kernels/reference/layerscale.ts";
import { pointwiseMlpBackwardRef, pointwiseMlpRef } from "../kernels/reference/pointwise_mlp.ts";
import {
  geluBackwardRef,
  geluRef,
  reluBackwardRef,
  reluRef,
  softmaxBackwardRef,
  softmaxRef,
} from "../kernels/reference/activation.ts";
import { linearBackwardRef, linearRef } from "../kernels/reference/linear.ts";
import { crossEntropyBackwardRef, crossEntropyRef } from "../kernels/reference/loss.ts";
import {
  batchNorm2dBackwardRef,
  batchNorm2dEvalBackwardRef,
  batchNorm2dEvalRef,
  batchNorm2dRef,
  groupNormBackwardRef,
  groupNormRef,
  layerNormBackwardRef,
  layerNormRef,
} from "../kernels/reference/norm.ts";
import { adaptiveAvgPool2dBackwardRef, adaptiveAvgPool2dRef } from "../kernels/reference/pool.ts";
import { opTolerance } from "../kernels/reference/tolerance.ts";
import { type CpuFn, randomArray, type Tol } from "./helpers.ts";

const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** One pass of an op that the planner decides, and how the runner checks each of its variants. */
export interface PassPlan {
  pass: ConvPass | "gradA" | "gradB";
  /** Override target: `${target}=${variant}` forces a variant of this pass. */
  target: "conv.forward" | "conv.inputGrad" | "conv.weightGrad" | "matmul";
  /** The inputs that take a gradient while this pass is checked, so that its backward runs this pass only. */
  grads: number[];
  /** The expected plan: the variants the planner must list for this pass, in its order. */
  expected: string[];
  /** What the planner lists now, for each conv or matmul of the op that runs this pass. */
  listed: () => string[][];
  /**
   * An override that must hold as well when `variant` is forced (a patch conv's own backward runs only
   * without the rewrite; the pointwise MLP's weight gradients need its input-gradient GEMM too).
   */
  base?: (variant: string) => string;
}

/** A fusion on an op's path, checked on and off under override `plan` (where the fused kernel runs). */
export interface FusionCheck {
  name: string;
  plan: string;
}

export type Init = (rng: Rng, shape: number[], index: number) => Float64Array;

/** One op on one shape. */
export interface OpCase {
  name: string;
  shapes: number[][];
  gpu: (xs: Tensor[]) => Tensor;
  cpu: CpuFn;
  /** Reference gradients of sum(cpu(xs)·dy) per input; absent: finite differences of `cpu`. */
  cpuBackward?: (xs: Float64Array[], dy: Float64Array) => Float64Array[];
  /** Inputs that never take a gradient (constants, running statistics). */
  noGrad: number[];
  init?: Init;
  tol?: Tol;
  gradTol?: Tol;
  passes: PassPlan[];
  fusions: FusionCheck[];
}

export type { Arr };

/** One PyTorch fixture case, ready to run, with the op's GPU function and CPU reference on its shape. */
export interface FixtureCase {
  name: string;
  gpu: (xs: Tensor[]) => Tensor;
  cpu: CpuFn;
  cpuBackward?: (xs: Float64Array[], dy: Float64Array) => Float64Array[];
  inputs: Arr[];
  /** Expected gradient of each input (null: the input takes none). */
  grads: (number[] | null)[];
  upstream: Arr;
  output: Arr;
  /** Inputs updated in place (BatchNorm's running statistics) and their expected values afterwards. */
  after: [number, number[]][];
}

export type FixtureFile = "ops.json" | "conv.json";

export interface OpEntry {
  name: string;
  cases: OpCase[];
  /** The fixture cases this op replays: a file, the `op` names it claims there (conv.json: all). */
  fixtures?: { file: FixtureFile; ops: string[]; load: (raw: unknown) => FixtureCase };
}

type Run<P> = Omit<FixtureCase, "gpu" | "cpu" | "cpuBackward"> & { p: P };

/** An op, generic in the parameters `P` of one checked shape (sizes, options, expected plan). */
interface OpSpec<P> {
  name: string;
  params: P[];
  describe: (p: P) => string;
  inputs: (p: P) => number[][];
  gpu: (p: P, xs: Tensor[]) => Tensor;
  cpu: (p: P, xs: Float64Array[]) => Float64Array;
  cpuBackward?: (p: P, xs: Float64Array[], dy: Float64Array) => Float64Array[];
  noGrad?: (p: P) => number[];
  init?: (p: P) => Init | undefined;
  tol?: Tol;
  gradTol?: Tol;
  plan?: (p: P) => PassPlan[];
  fixtures?: { file: FixtureFile; ops: string[]; load: (raw: unknown) => Run<P> };
  /** Fusions (kernels/planner.ts FUSIONS) on this shape's path: checked on and off, equal to each other. */
  fusions?: (p: P) => FusionCheck[];
}

export const REGISTRY: OpEntry[] = [];

function register<P>(s: OpSpec<P>): void {
  const fx = s.fixtures;
  REGISTRY.push({
    name: s.name,
    cases: s.params.map((p) => ({
      name: s.describe(p),
      shapes: s.inputs(p),
      gpu: (xs) => s.gpu(p, xs),
      cpu: (xs) => s.cpu(p, xs),
      cpuBackward: s.cpuBackward && ((xs, dy) => s.cpuBackward!(p, xs, dy)),
      noGrad: s.noGrad?.(p) ?? [],
      init: s.init?.(p),
      tol: s.tol ?? opTolerance(s.name).tol,
      gradTol: s.gradTol ?? opTolerance(s.name).gradTol,
      passes: s.plan?.(p) ?? [],
      fusions: s.fusions?.(p) ?? [],
    })),
    fixtures: fx && {
      file: fx.file,
      ops: fx.ops,
      load: (raw) => {
        const { p, ...rest } = fx.load(raw);
        return {
          ...rest,
          gpu: (xs) => s.gpu(p, xs),
          cpu: (xs) => s.cpu(p, xs),
          cpuBackward: s.cpuBackward && ((xs, dy) => s.cpuBackward!(p, xs, dy)),
        };
      },
    },
  });
}

const lsShape = ([n, c, h, w]: number[]) => ({ n, c, p: h * w });
const scaled = (scale: number): Init => (rng, shape) => randomArray(rng, prod(shape), scale);

// ---------------------------------------------------------------- fixture formats

/** The inputs `names` of an ops.json case, in the op's input order. */
function opsRun<P>(raw: unknown, names: string[], p: (c: OpsFixture) => P): Run<P> {
  const c = raw as OpsFixture;
  return {
    p: p(c),
    name: c.name,
    inputs: names.map((k) => c.inputs[k]),
    grads: names.map((k) => c.grads[k]?.data ?? null),
    upstream: c.upstream,
    output: c.output,
    after: [],
  };
}

// ---------------------------------------------------------------- conv2d

interface ConvP {
  x: [number, number, number, number];
  o: number;
  k: number;
  stride?: number;
  pad?: number;
  groups?: number;
  bias?: boolean;
  /** The variants the planner lists per pass (absent for fixture cases). */
  plan?: Record<ConvPass, string[]>;
}

const convS = (p: ConvP) => convShape(p.x, p.o, p.k, p.stride ?? 1, p.pad ?? 0, p.groups ?? 1);
const T1 = ["gemm1x1/tiled", "gemm1x1/scalar"];
const VEC4 = ["gemm1x1/vec4-texture", "gemm1x1/vec4-texture-half", "gemm1x1/vec4"];
const T4 = ["gemm1x1/texture", "gemm1x1/tiled", ...VEC4, "gemm1x1/scalar"];
const T6 = ["gemm1x1/columns-texture", "gemm1x1/columns-tiled", ...T4];
const DIRECT = { forward: ["direct/blocked"], inputGrad: ["direct/blocked"], weightGrad: ["direct/blocked"] };
const DW = ["depthwise/tiled", "depthwise/direct"];
const PATCHES = {
  forward: ["patches", "direct/blocked"],
  inputGrad: ["direct/blocked"],
  weightGrad: ["direct/blocked"],
};

function convPlan(p: ConvP): PassPlan[] {
  if (!p.plan) return [];
  const s = convS(p), bias = p.bias !== false;
  // without the rewrite a patch conv runs its own backward; with it, a 1×1 conv's
  const base = p.plan.forward.includes("patches") ? "conv.forward=direct/blocked" : undefined;
  const pass = (pass: ConvPass, grads: number[]): PassPlan => ({
    pass,
    target: `conv.${pass}`,
    grads,
    expected: p.plan![pass],
    listed: () => [convVariants(s, pass)],
    base: pass === "forward" || !base ? undefined : () => base,
  });
  return [
    pass("forward", bias ? [0, 1, 2] : [0, 1]),
    pass("inputGrad", [0]),
    pass("weightGrad", bias ? [1, 2] : [1]),
  ];
}

register<ConvP>({
  name: "conv2d",
  params: [
    { x: [3, 5, 9, 9], o: 6, k: 1, plan: { forward: T1, inputGrad: T1, weightGrad: T1 } },
    { x: [1, 8, 8, 8], o: 12, k: 1, plan: { forward: T4, inputGrad: T4, weightGrad: T4 } },
    // images under 64 pixels, batch > 1: also one GEMM over all images (columns)
    { x: [3, 8, 4, 4], o: 12, k: 1, bias: false, plan: { forward: T6, inputGrad: T6, weightGrad: T4 } },
    // a register block wider than one image: the vec4 kernels' columns run over all images' pixels
    { x: [5, 8, 2, 2], o: 12, k: 1, plan: { forward: T6, inputGrad: T6, weightGrad: T4 } },
    // longer reductions: the weight gradients split over chunks of the N·H·W pixels
    { x: [1, 3, 17, 17], o: 7, k: 1, plan: { forward: T1, inputGrad: T1, weightGrad: T1 } },
    { x: [4, 8, 16, 16], o: 8, k: 1, plan: { forward: T4, inputGrad: T4, weightGrad: T4 } },
    // more channels and pixels than one register block of the software profile (32): partial blocks
    { x: [2, 36, 8, 8], o: 40, k: 1, plan: { forward: T4, inputGrad: T4, weightGrad: T4 } },
    {
      x: [2, 8, 12, 12],
      o: 6,
      k: 1,
      bias: false,
      plan: {
        forward: T4,
        inputGrad: ["gemm1x1/tiled", ...VEC4, "gemm1x1/scalar"],
        weightGrad: T4,
      },
    },
    { x: [1, 3, 9, 9], o: 7, k: 3, pad: 1, plan: DIRECT }, // stem
    { x: [3, 5, 9, 9], o: 6, k: 3, pad: 1, bias: false, plan: DIRECT },
    { x: [3, 5, 3, 3], o: 6, k: 3, plan: DIRECT }, // a 1×1 output
    { x: [1, 5, 9, 9], o: 7, k: 3, stride: 2, pad: 1, plan: DIRECT },
    { x: [3, 8, 7, 7], o: 6, k: 3, pad: 1, groups: 2, plan: DIRECT },
    { x: [1, 3, 7, 7], o: 6, k: 3, pad: 1, groups: 3, plan: DIRECT }, // channel multiplier 2
    { x: [3, 5, 9, 9], o: 5, k: 7, pad: 3, groups: 5, plan: { forward: DW, inputGrad: DW, weightGrad: DW } },
    { x: [3, 6, 8, 8], o: 6, k: 7, pad: 3, groups: 6, plan: { forward: DW, inputGrad: DW, weightGrad: DW } },
    { x: [1, 5, 9, 9], o: 5, k: 3, pad: 1, groups: 5, plan: { forward: DW, inputGrad: DW, weightGrad: DW } },
    {
      x: [1, 6, 8, 8],
      o: 6,
      k: 3,
      pad: 1,
      groups: 6,
      bias: false,
      plan: { forward: DW, inputGrad: DW, weightGrad: DW },
    },
    {
      x: [1, 5, 9, 9],
      o: 5,
      k: 7,
      stride: 2,
      pad: 3,
      groups: 5,
      plan: {
        forward: ["depthwise/direct"],
        inputGrad: ["depthwise/direct"],
        weightGrad: ["depthwise/direct"],
      },
    },
    { x: [3, 5, 9, 9], o: 6, k: 2, stride: 2, plan: PATCHES }, // 2×2/2 downsampling
    { x: [3, 5, 9, 9], o: 6, k: 1, stride: 2, bias: false, plan: PATCHES }, // 1×1/2 shortcut
  ],
  describe: (p) =>
    `${p.k}×${p.k}${(p.stride ?? 1) > 1 ? `/${p.stride}` : ""}${p.pad ? ` pad ${p.pad}` : ""}` +
    `${(p.groups ?? 1) > 1 ? ` groups ${p.groups}` : ""} on [${p.x}] → ${p.o}${
      p.bias === false ? "" : " +bias"
    }`,
  inputs: (p) => [p.x, [p.o, p.x[1] / (p.groups ?? 1), p.k, p.k], ...(p.bias === false ? [] : [[p.o]])],
  gpu: (p, [x, w, b]) => conv2d(x, w, b ?? null, { stride: p.stride, padding: p.pad, groups: p.groups }),
  cpu: (p, [x, w, b]) => conv2dRef(x, w, b ?? null, convS(p)),
  cpuBackward: (p, [x, w, b], dy) => {
    const s = convS(p);
    const g = [conv2dBackwardInputRef(dy, w, s), conv2dBackwardWeightRef(dy, x, s)];
    return b ? [...g, conv2dBackwardBiasRef(dy, s)] : g;
  },
  plan: convPlan,
  // the direct depthwise weight gradient sums its chunks in one workgroup; the vec4 1×1 weight
  // gradient sums the bias gradient too
  fusions: (p) => [
    ...(p.groups === p.x[1] && p.o === p.x[1]
      ? [{ name: "depthwise-weight-tree", plan: "conv.weightGrad=depthwise/direct" }]
      : []),
    ...(p.plan?.weightGrad.includes("gemm1x1/vec4") && p.bias !== false
      ? [{ name: "weight-grad-bias", plan: "conv.weightGrad=gemm1x1/vec4" }]
      : []),
  ],
  fixtures: {
    file: "conv.json",
    ops: [],
    load: (raw) => {
      const c = raw as ConvFixture;
      const [n, ch, h, w] = c.xShape;
      const p: ConvP = {
        x: [n, ch, h, w],
        o: c.wShape[0],
        k: c.wShape[2],
        stride: c.stride,
        pad: c.padding,
        groups: c.groups,
        bias: c.b !== null,
      };
      const arr = (data: number[], shape: number[]) => ({ data, shape });
      return {
        p,
        name: c.name,
        inputs: [arr(c.x, c.xShape), arr(c.w, c.wShape), ...(c.b ? [arr(c.b, [c.b.length])] : [])],
        grads: [c.gx, c.gw, ...(c.gb ? [c.gb] : [])],
        upstream: arr(c.gy, c.yShape),
        output: arr(c.y, c.yShape),
        after: [],
      };
    },
  },
});

// ---------------------------------------------------------------- the pointwise MLP (1×1 → GELU → 1×1)

interface MlpP {
  x: [number, number, number, number];
  e: number;
  o: number;
  /** The variants the planner lists per pass, for both convs. */
  plan: Record<ConvPass, string[]>;
}

const mlpShapes = (p: MlpP) => [convShape(p.x, p.e, 1), convShape([p.x[0], p.e, p.x[2], p.x[3]], p.o, 1)];
const mlpDims = (p: MlpP) => ({ n: p.x[0], c: p.x[1], p: p.x[2] * p.x[3], e: p.e, o: p.o });

register<MlpP>({
  name: "pointwiseMlp",
  params: [
    { x: [3, 5, 9, 9], e: 7, o: 6, plan: { forward: T1, inputGrad: T1, weightGrad: T1 } },
    { x: [1, 8, 8, 8], e: 16, o: 8, plan: { forward: T4, inputGrad: T4, weightGrad: T4 } },
    { x: [3, 8, 4, 4], e: 16, o: 8, plan: { forward: T6, inputGrad: T6, weightGrad: T4 } },
  ],
  describe: (p) => `[${p.x}] → ${p.e} → GELU → ${p.o}`,
  inputs: (p) => [p.x, [p.e, p.x[1], 1, 1], [p.e], [p.o, p.e, 1, 1], [p.o]],
  gpu: (_p, [x, w1, b1, w2, b2]) => pointwiseMlp(x, w1, b1, w2, b2, planFusions()),
  cpu: (p, [x, w1, b1, w2, b2]) => pointwiseMlpRef(x, w1, b1, w2, b2, mlpDims(p)).y,
  cpuBackward: (p, [x, w1, b1, w2, b2], dy) => {
    const g = pointwiseMlpBackwardRef(x, w1, b1, w2, b2, dy, mlpDims(p));
    return [g.dx, g.dw1, g.db1, g.dw2, g.db2];
  },
  plan: (p) => {
    const [s1, s2] = mlpShapes(p);
    const pass = (pass: ConvPass, grads: number[]): PassPlan => ({
      pass,
      target: `conv.${pass}`,
      grads,
      expected: p.plan[pass],
      listed: () => [convVariants(s1, pass), convVariants(s2, pass)],
      // the weight gradients need dpre, the project conv's input gradient: the same variant where listed
      base: pass === "weightGrad" ? (v) => `conv.inputGrad=${v}` : undefined,
    });
    return [pass("forward", [0, 1, 2, 3, 4]), pass("inputGrad", [0]), pass("weightGrad", [1, 2, 3, 4])];
  },
  // the GELU and its backward go into the stores of the GEMM variants that take an epilogue
  fusions: (p) => [
    { name: "bias-gelu", plan: "conv=tiled" },
    { name: "gelu-backward", plan: "conv=tiled" },
    ...(p.plan.weightGrad.includes("gemm1x1/vec4")
      ? [{ name: "weight-grad-bias", plan: "conv=gemm1x1/vec4" } as const]
      : []),
  ],
});

// ---------------------------------------------------------------- matmul and linear

/** The products of the backward (autograd/ops/matmul.ts): dA and dB are matmuls of their own. */
export function matmulGradDims(d: MatmulDims, which: "gradA" | "gradB"): MatmulDims {
  const { batch, m, n, k } = d, out = d.batchA || d.batchB;
  if (which === "gradA") {
    return d.transA
      ? { batch, m: k, n: m, k: n, transA: d.transB, transB: true, batchA: d.batchB, batchB: out }
      : { batch, m, n: k, k: n, transA: false, transB: !d.transB, batchA: out, batchB: d.batchB };
  }
  return d.transB
    ? { batch, m: n, n: k, k: m, transA: true, transB: d.transA, batchA: out, batchB: d.batchA }
    : { batch, m: k, n, k: m, transA: !d.transA, transB: false, batchA: d.batchA, batchB: out };
}

type MatmulPlan = Record<"forward" | "gradA" | "gradB", string[]>;

function matmulPlan(d: MatmulDims, plan: MatmulPlan, gradB: number[]): PassPlan[] {
  const pass = (pass: "forward" | "gradA" | "gradB", grads: number[], dims: MatmulDims): PassPlan => ({
    pass,
    target: "matmul",
    grads,
    expected: plan[pass],
    listed: () => [matmulVariants(dims)],
  });
  return [
    pass("forward", [0, ...gradB], d),
    pass("gradA", [0], matmulGradDims(d, "gradA")),
    pass("gradB", gradB, matmulGradDims(d, "gradB")),
  ];
}

interface MatmulP {
  a: number[];
  b: number[];
  tA?: boolean;
  tB?: boolean;
  plan: MatmulPlan;
}

function mmDims(p: MatmulP): MatmulDims {
  const [ar, ac] = p.a.slice(-2), [br, bc] = p.b.slice(-2);
  const batchA = p.a.length === 3, batchB = p.b.length === 3;
  return {
    batch: batchA ? p.a[0] : batchB ? p.b[0] : 1,
    m: p.tA ? ac : ar,
    n: p.tB ? br : bc,
    k: p.tA ? ar : ac,
    transA: !!p.tA,
    transB: !!p.tB,
    batchA,
    batchB,
  };
}

const G = ["matmul/tiled", "matmul/generic"];
const TX = ["matmul/texture", ...G];

register<MatmulP>({
  name: "matmul",
  params: [
    { a: [5, 7], b: [7, 3], plan: { forward: G, gradA: G, gradB: G } },
    { a: [17, 6], b: [6, 33], plan: { forward: G, gradA: G, gradB: G } },
    { a: [3, 5, 7], b: [7, 6], plan: { forward: G, gradA: G, gradB: G } }, // B shared by the batch
    { a: [5, 7], b: [2, 7, 6], plan: { forward: G, gradA: G, gradB: G } }, // A shared
    { a: [7, 5], b: [6, 7], tA: true, tB: true, plan: { forward: G, gradA: G, gradB: G } },
    // multiples of 4 (the texture GEMM), m = 12 and n = 20 leave partial blocks
    { a: [3, 12, 16], b: [16, 20], plan: { forward: TX, gradA: TX, gradB: TX } },
    { a: [3, 16, 12], b: [20, 16], tA: true, tB: true, plan: { forward: TX, gradA: TX, gradB: TX } },
    { a: [9, 8], b: [7, 8], tB: true, plan: { forward: TX, gradA: G, gradB: G } }, // n = 7, B transposed
  ],
  describe: (p) => `[${p.a}]${p.tA ? "ᵀ" : ""}·[${p.b}]${p.tB ? "ᵀ" : ""}`,
  inputs: (p) => [p.a, p.b],
  gpu: (p, [a, b]) => matmulT(a, b, { transA: p.tA, transB: p.tB }),
  cpu: (p, [a, b]) => matmulRef(a, b, mmDims(p)),
  cpuBackward: (p, [a, b], dy) => {
    const g = matmulBackwardRef(a, b, dy, mmDims(p));
    return [g.da, g.db];
  },
  plan: (p) => matmulPlan(mmDims(p), p.plan, [1]),
});

interface LinearP {
  x: number[];
  out: number;
  bias: boolean;
  plan?: MatmulPlan;
}

const linDims = (p: LinearP): MatmulDims => ({
  batch: 1,
  m: prod(p.x.slice(0, -1)),
  n: p.out,
  k: p.x[p.x.length - 1],
  transA: false,
  transB: true,
  batchA: false,
  batchB: false,
});

register<LinearP>({
  name: "linear",
  params: [
    { x: [3, 5], out: 7, bias: true, plan: { forward: G, gradA: G, gradB: G } },
    { x: [3, 13], out: 6, bias: false, plan: { forward: G, gradA: G, gradB: G } },
    { x: [2, 3, 5], out: 4, bias: true, plan: { forward: G, gradA: G, gradB: G } }, // leading dims flattened
    { x: [4, 8], out: 12, bias: true, plan: { forward: TX, gradA: TX, gradB: TX } },
  ],
  describe: (p) => `[${p.x}] → ${p.out}${p.bias ? " +bias" : ""}`,
  inputs: (p) => [p.x, [p.out, p.x[p.x.length - 1]], ...(p.bias ? [[p.out]] : [])],
  gpu: (_p, [x, w, b]) => linear(x, w, b),
  cpu: (p, [x, w, b]) => linearRef(x, w, b ?? null, p.x[p.x.length - 1]),
  cpuBackward: (p, [x, w, b], dy) => {
    const g = linearBackwardRef(x, w, dy, p.x[p.x.length - 1]);
    return b ? [g.dx, g.dw, g.db] : [g.dx, g.dw];
  },
  plan: (p) => p.plan ? matmulPlan(linDims(p), p.plan, p.bias ? [1, 2] : [1]) : [],
  fixtures: {
    file: "ops.json",
    ops: ["linear"],
    load: (raw) =>
      opsRun(
        raw,
        ["x", "weight", "bias"],
        (c) => ({ x: c.inputs.x.shape, out: c.inputs.weight.shape[0], bias: true }),
      ),
  },
});

// ---------------------------------------------------------------- activations

register<{ shape: number[]; scale: number }>({
  name: "gelu",
  params: [{ shape: [3, 5, 9, 9], scale: 1 }, { shape: [2, 7], scale: 4 }],
  describe: (p) => `[${p.shape}] in ±${p.scale}`,
  inputs: (p) => [p.shape],
  init: (p) => scaled(p.scale),
  gpu: (_p, [x]) => gelu(x),
  cpu: (_p, [x]) => geluRef(x),
  cpuBackward: (_p, [x], dy) => [geluBackwardRef(x, dy)],
  fixtures: {
    file: "ops.json",
    ops: ["gelu"],
    load: (raw) => opsRun(raw, ["x"], (c) => ({ shape: c.inputs.x.shape, scale: 1 })),
  },
});

register<{ shape: number[] }>({
  name: "relu",
  params: [{ shape: [1, 5, 9, 9] }, { shape: [3, 7] }],
  describe: (p) => `[${p.shape}]`,
  inputs: (p) => [p.shape],
  // away from 0, where relu has a kink (its gradient there is checked in tests/elementwise_test.ts)
  init: () => (rng, s) =>
    Float64Array.from({ length: prod(s) }, () => (rng.uniform() < 0.5 ? -1 : 1) * (0.1 + rng.uniform())),
  gpu: (_p, [x]) => relu(x),
  cpu: (_p, [x]) => reluRef(x),
  cpuBackward: (_p, [x], dy) => [reluBackwardRef(x, dy)],
});

register<{ shape: number[]; dim: number }>({
  name: "softmax",
  params: [
    { shape: [3, 7], dim: -1 },
    { shape: [3, 7], dim: 0 },
    { shape: [3, 10], dim: 1 },
    { shape: [2, 5, 3], dim: 1 },
    { shape: [3, 5, 9, 9], dim: 1 },
  ],
  describe: (p) => `dim ${p.dim} of [${p.shape}]`,
  inputs: (p) => [p.shape],
  init: () => scaled(3),
  gpu: (p, [x]) => softmax(x, p.dim),
  cpu: (p, [x]) => softmaxRef(x, p.shape, p.dim < 0 ? p.dim + p.shape.length : p.dim),
  cpuBackward: (p, [x], dy) => {
    const dim = p.dim < 0 ? p.dim + p.shape.length : p.dim;
    return [softmaxBackwardRef(softmaxRef(x, p.shape, dim), dy, p.shape, dim)];
  },
  fixtures: {
    file: "ops.json",
    ops: ["softmax"],
    load: (raw) => opsRun(raw, ["x"], (c) => ({ shape: c.inputs.x.shape, dim: c.args.dim as number })),
  },
});

// ---------------------------------------------------------------- losses

interface CeP {
  n: number;
  c: number;
  targets: number[];
}

const ceFixture = (raw: unknown) =>
  opsRun(raw, ["logits"], (c): CeP => ({
    n: c.inputs.logits.shape[0],
    c: c.inputs.logits.shape[1],
    targets: c.args.targets as number[],
  }));

register<CeP>({
  name: "crossEntropy",
  params: [{ n: 3, c: 5, targets: [4, 0, 2] }, { n: 1, c: 7, targets: [3] }, {
    n: 6,
    c: 10,
    targets: [9, 1, 1, 0, 5, 3],
  }],
  describe: (p) => `[${p.n}, ${p.c}]`,
  inputs: (p) => [[p.n, p.c]],
  init: () => scaled(3),
  gpu: (p, [x]) => crossEntropy(x, p.targets),
  cpu: (p, [x]) => Float64Array.of(crossEntropyRef(x, p.n, p.c, p.targets)),
  cpuBackward: (p, [x], dy) => [crossEntropyBackwardRef(x, p.n, p.c, p.targets, dy[0])],
  fixtures: { file: "ops.json", ops: ["crossEntropy"], load: ceFixture },
});

register<CeP>({
  name: "crossEntropy∘softmax",
  // the notebook's double softmax: the loss's log-softmax applied to probabilities
  params: [{ n: 3, c: 5, targets: [2, 0, 4] }],
  describe: (p) => `[${p.n}, ${p.c}]`,
  inputs: (p) => [[p.n, p.c]],
  gpu: (p, [x]) => crossEntropy(softmax(x, 1), p.targets),
  cpu: (p, [x]) => Float64Array.of(crossEntropyRef(softmaxRef(x, [p.n, p.c], 1), p.n, p.c, p.targets)),
  cpuBackward: (p, [x], dy) => {
    const s = softmaxRef(x, [p.n, p.c], 1);
    return [softmaxBackwardRef(s, crossEntropyBackwardRef(s, p.n, p.c, p.targets, dy[0]), [p.n, p.c], 1)];
  },
  fixtures: { file: "ops.json", ops: ["crossEntropySoftmax"], load: ceFixture },
});

// ---------------------------------------------------------------- norms

/** The backward's sums (means per statistic, dw, db) in one reduction kernel. */
const BACKWARD_SUMS: FusionCheck = { name: "norm-backward-sums", plan: "" };

interface GroupP {
  shape: number[];
  groups: number;
  affine: boolean;
}

register<GroupP>({
  name: "groupNorm",
  params: [
    { shape: [3, 6, 9, 9], groups: 1, affine: true }, // GroupNorm(1): one workgroup (tree) per sample
    { shape: [1, 6, 9, 9], groups: 3, affine: true }, // one invocation per statistic
    { shape: [3, 5, 4, 4], groups: 5, affine: false },
    { shape: [3, 5, 9, 9], groups: 1, affine: true },
    // last axis a multiple of 4 and long sums: the vec4 statistics, backward-sum and elementwise kernels
    { shape: [2, 6, 8, 8], groups: 1, affine: true },
    { shape: [2, 4, 16, 16], groups: 2, affine: false },
  ],
  describe: (p) => `(${p.groups}) of [${p.shape}]${p.affine ? " with weight and bias" : ""}`,
  inputs: (p) => p.affine ? [p.shape, [p.shape[1]], [p.shape[1]]] : [p.shape],
  gpu: (p, [x, w, b]) => groupNorm(x, p.groups, w, b, 1e-5, planFusions()),
  cpu: (p, [x, w, b]) => groupNormRef(x, p.shape, p.groups, w ?? null, b ?? null),
  cpuBackward: (p, [x, w], dy) => {
    const g = groupNormBackwardRef(x, p.shape, p.groups, w ?? null, dy);
    return p.affine ? [g.dx, g.dw, g.db] : [g.dx];
  },
  fusions: () => [BACKWARD_SUMS],
  fixtures: {
    file: "ops.json",
    ops: ["groupNorm"],
    load: (raw) =>
      opsRun(raw, ["x", "weight", "bias"], (c) => ({
        shape: c.inputs.x.shape,
        groups: c.args.groups as number,
        affine: true,
      })),
  },
});

// ---------------------------------------------------------------- depthwise conv → GroupNorm

interface DwNormP {
  x: [number, number, number, number];
  k: number;
  stride: number;
  groups: number;
  bias: boolean;
}

const dwNormS = (p: DwNormP) => convShape(p.x, p.x[1], p.k, p.stride, p.k >> 1, p.x[1]);

// ConvNeXt's dwconv → GroupNorm(1), the statistics taken from blocks the conv's store writes
// (partial blocks at the odd edges; several groups; a conv bias; stride 2)
register<DwNormP>({
  name: "convGroupNorm",
  params: [
    { x: [3, 6, 9, 9], k: 7, stride: 1, groups: 1, bias: false },
    { x: [2, 8, 8, 8], k: 7, stride: 1, groups: 2, bias: true },
    { x: [1, 4, 11, 10], k: 3, stride: 2, groups: 4, bias: false },
  ],
  describe: (p) =>
    `${p.k}×${p.k}${p.stride > 1 ? `/${p.stride}` : ""} depthwise on [${p.x}]${p.bias ? " +bias" : ""} → ` +
    `groupNorm(${p.groups})`,
  inputs: (p) => {
    const c = p.x[1];
    return [p.x, [c, 1, p.k, p.k], [c], [c], ...(p.bias ? [[c]] : [])];
  },
  gpu: (p, [x, w, gamma, beta, b]) => {
    const opts = { stride: p.stride, padding: p.k >> 1, groups: p.x[1] };
    const norm = { groups: p.groups, weight: gamma, bias: beta, eps: 1e-5 };
    return convGroupNorm(x, w, b ?? null, opts, norm, planFusions());
  },
  cpu: (p, [x, w, gamma, beta, b]) => {
    const s = dwNormS(p);
    return groupNormRef(conv2dRef(x, w, b ?? null, s), [s.n, s.o, s.oh, s.ow], p.groups, gamma, beta);
  },
  cpuBackward: (p, [x, w, gamma, , b], dy) => {
    const s = dwNormS(p);
    const y = conv2dRef(x, w, b ?? null, s);
    const g = groupNormBackwardRef(y, [s.n, s.o, s.oh, s.ow], p.groups, gamma, dy);
    const conv = [conv2dBackwardInputRef(g.dx, w, s), conv2dBackwardWeightRef(g.dx, x, s)];
    return [...conv, g.dw, g.db, ...(b ? [conv2dBackwardBiasRef(g.dx, s)] : [])];
  },
  fusions: () => [{ name: "depthwise-norm-stats", plan: "conv.forward=depthwise/direct" }],
});

interface LayerP {
  shape: number[];
  ns: number | number[];
  affine: boolean;
}

register<LayerP>({
  name: "layerNorm",
  params: [
    { shape: [3, 7], ns: [7], affine: true },
    { shape: [2, 300], ns: [300], affine: true }, // the tree path
    { shape: [2, 3, 5], ns: [3, 5], affine: true },
    { shape: [3, 9], ns: 9, affine: false }, // normalizedShape as a number
  ],
  describe: (p) => `over ${p.ns} of [${p.shape}]${p.affine ? " with weight and bias" : ""}`,
  inputs: (p) => p.affine ? [p.shape, [p.ns].flat(), [p.ns].flat()] : [p.shape],
  gpu: (p, [x, w, b]) => layerNorm(x, p.ns, w, b, 1e-5, planFusions()),
  cpu: (p, [x, w, b]) => layerNormRef(x, prod([p.ns].flat()), w ?? null, b ?? null),
  cpuBackward: (p, [x, w], dy) => {
    const g = layerNormBackwardRef(x, prod([p.ns].flat()), w ?? null, dy);
    return p.affine ? [g.dx, g.dw, g.db] : [g.dx];
  },
  fusions: () => [BACKWARD_SUMS],
  fixtures: {
    file: "ops.json",
    ops: ["layerNorm"],
    load: (raw) =>
      opsRun(raw, ["x", "weight", "bias"], (c) => ({
        shape: c.inputs.x.shape,
        ns: c.args.normalizedShape as number[],
        affine: true,
      })),
  },
});

interface BatchP {
  shape: number[];
  training: boolean;
  /** Inputs 3 and 4 are the running mean and variance (no gradient). */
  stats: boolean;
  momentum?: number;
}

register<BatchP>({
  name: "batchNorm2d",
  params: [
    { shape: [3, 5, 9, 9], training: true, stats: false },
    { shape: [1, 5, 9, 9], training: true, stats: false },
    { shape: [3, 5, 11, 11], training: true, stats: false },
    { shape: [3, 7], training: true, stats: false },
    { shape: [3, 5, 9, 9], training: false, stats: true }, // eval: the running statistics
    { shape: [3, 5, 9, 9], training: true, stats: true }, // training that updates them
    { shape: [4, 3, 8, 8], training: true, stats: true }, // vec4 kernels (last axis 64, sums of 256)
  ],
  describe: (p) =>
    `${p.training ? "training" : "eval"} on [${p.shape}]${p.stats ? " with running statistics" : ""}`,
  inputs: (p) => {
    const c = [p.shape[1]];
    return p.stats ? [p.shape, c, c, c, c] : [p.shape, c, c];
  },
  noGrad: (p) => p.stats ? [3, 4] : [],
  init: () => (rng, s, i) => {
    const a = randomArray(rng, prod(s));
    return i === 4 ? a.map((v) => 0.5 + Math.abs(v)) : a; // a positive running variance
  },
  gpu: (p, [x, w, b, rm, rv]) =>
    batchNorm2d(x, rm ?? null, rv ?? null, w, b, p.training, p.momentum ?? 0.1, 1e-5, planFusions()),
  cpu: (p, [x, w, b, rm, rv]) =>
    p.training ? batchNorm2dRef(x, p.shape, w, b).y : batchNorm2dEvalRef(x, p.shape, w, b, rm, rv),
  cpuBackward: (p, [x, w, , rm, rv], dy) => {
    const g = p.training
      ? batchNorm2dBackwardRef(x, p.shape, w, dy)
      : batchNorm2dEvalBackwardRef(x, p.shape, w, rm, rv, dy);
    // the running statistics take no gradient
    return p.stats ? [g.dx, g.dw, g.db, new Float64Array(rm.length), new Float64Array(rv.length)] : [
      g.dx,
      g.dw,
      g.db,
    ];
  },
  fusions: (p) =>
    p.training ? [BACKWARD_SUMS, ...(p.stats ? [{ name: "norm-running-stats", plan: "" }] : [])] : [],
  fixtures: {
    file: "ops.json",
    ops: ["batchNorm2d"],
    load: (raw) => {
      const c = raw as OpsFixture;
      const r = opsRun(raw, ["x", "weight", "bias"], (): BatchP => ({
        shape: c.inputs.x.shape,
        training: c.args.training as boolean,
        momentum: c.args.momentum as number,
        stats: true,
      }));
      r.inputs.push(c.args.runningMean as Arr, c.args.runningVar as Arr);
      r.grads.push(null, null);
      if (c.runningMeanAfter) r.after = [[3, c.runningMeanAfter.data], [4, c.runningVarAfter!.data]];
      return r;
    },
  },
});

// ---------------------------------------------------------------- pooling and scaling

register<{ shape: number[]; size: number | [number, number] }>({
  name: "adaptiveAvgPool2d",
  params: [
    { shape: [3, 5, 9, 9], size: 1 }, // the head: global average
    { shape: [1, 6, 9, 9], size: 1 },
    { shape: [2, 3, 9, 9], size: 4 }, // overlapping windows
    { shape: [2, 3, 7, 5], size: [3, 2] },
    { shape: [1, 2, 2, 3], size: [5, 4] }, // more outputs than inputs
  ],
  describe: (p) => `[${p.shape}] to ${p.size}`,
  inputs: (p) => [p.shape],
  gpu: (p, [x]) => adaptiveAvgPool2d(x, p.size),
  cpu: (p, [x]) => {
    const [oh, ow] = typeof p.size === "number" ? [p.size, p.size] : p.size;
    return adaptiveAvgPool2dRef(x, p.shape, oh, ow);
  },
  cpuBackward: (p, _xs, dy) => {
    const [oh, ow] = typeof p.size === "number" ? [p.size, p.size] : p.size;
    return [adaptiveAvgPool2dBackwardRef(dy, p.shape, oh, ow)];
  },
  fixtures: {
    file: "ops.json",
    ops: ["adaptiveAvgPool2d"],
    load: (raw) =>
      opsRun(raw, ["x"], (c) => ({ shape: c.inputs.x.shape, size: c.args.outputSize as number })),
  },
});

register<{ shape: number[] }>({
  name: "layerScale",
  // ConvNeXt's layer scale x · gamma[C, 1, 1] (a broadcast mul)
  params: [{ shape: [3, 5, 9, 9] }],
  describe: (p) => `[${p.shape}] · gamma[${p.shape[1]}, 1, 1]`,
  inputs: (p) => [p.shape, [p.shape[1]]],
  gpu: (p, [x, g]) => mul(x, reshape(g, [p.shape[1], 1, 1])),
  cpu: (p, [x, g]) => layerScaleRef(x, g, lsShape(p.shape)),
  cpuBackward: (p, [x, g], dy) => {
    const r = layerScaleBackwardRef(dy, x, g, lsShape(p.shape));
    return [r.dx, r.dgamma];
  },
  fixtures: {
    file: "ops.json",
    ops: ["layerScale"],
    load: (raw) => opsRun(raw, ["x", "gamma"], (c) => ({ shape: c.inputs.x.shape })),
  },
});

register<{ shape: [number, number, number, number] }>({
  name: "layerScaleResidual",
  // ConvNeXt's residual tail x + γ·branch; with its fusion off the model runs add(mul(…), x) instead
  params: [{ shape: [3, 5, 9, 9] }, { shape: [1, 8, 4, 4] }],
  describe: (p) => `[${p.shape}]`,
  inputs: (p) => [p.shape, [p.shape[1]], p.shape],
  gpu: (p, [x, g, branch]) =>
    fusionEnabled("layerscale-residual")
      ? layerScaleResidual(x, g, branch)
      : add(mul(branch, reshape(g, [p.shape[1], 1, 1])), x),
  cpu: (p, [x, g, branch]) => layerScaleResidualRef(x, g, branch, lsShape(p.shape)),
  cpuBackward: (p, [, g, branch], dy) => {
    const r = layerScaleResidualBackwardRef(dy, branch, g, lsShape(p.shape));
    return [r.dx, r.dgamma, r.dbranch];
  },
  fusions: () => [{ name: "layerscale-residual", plan: "" }],
});
