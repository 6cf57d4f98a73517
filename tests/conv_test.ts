import { type Tensor, tensor } from "../mod.ts";
import { conv2d } from "../autograd/ops/conv.ts";
import { assertClose, checkOp, setup } from "./helpers.ts";
import assert from "node:assert/strict";
import { startCapture, stopCapture } from "../kernels/runtime.ts";
import {
  convBackwardBiasRef,
  convBackwardInputRef,
  convBackwardWeightRef,
  convForwardRef,
  convShape,
} from "../kernels/reference/conv.ts";

await setup();

interface Cfg {
  x: number[]; // [N, C, H, W]
  o: number;
  k: number;
  stride?: number;
  padding?: number;
  groups?: number;
  bias?: boolean;
}

/** CPU reference convolution of a test case (kernels/reference/conv.ts). */
function cpuConv(x: Float64Array, w: Float64Array, b: Float64Array | null, cfg: Cfg): Float64Array {
  return convForwardRef(x, w, b, convShape(cfg.x, cfg.o, cfg.k, cfg.stride, cfg.padding, cfg.groups));
}

function check(name: string, cfg: Cfg) {
  const { o, k, stride = 1, padding = 0, groups = 1, bias = true } = cfg;
  const shapes = [cfg.x, [o, cfg.x[1] / groups, k, k], ...(bias ? [[o]] : [])];
  return checkOp({
    name,
    shapes,
    gpu: ([x, w, b]) => conv2d(x, w, bias ? b : null, { stride, padding, groups }),
    cpu: ([x, w, b]) => cpuConv(x, w, bias ? b : null, cfg),
  });
}

const cases: [string, Cfg][] = [
  ["1x1 (GEMM)", { x: [3, 5, 9, 9], o: 6, k: 1 }],
  ["1x1 stem, 3 channels, split weight gradient", { x: [1, 3, 17, 17], o: 7, k: 1 }],
  ["1x1 vec4 path (C, H·W multiples of 4), partial blocks", { x: [3, 8, 6, 6], o: 20, k: 1 }],
  ["1x1 vec4 path, split weight gradient", { x: [2, 8, 12, 12], o: 6, k: 1, bias: false }],
  ["1x1 stride 2", { x: [3, 5, 9, 9], o: 6, k: 1, stride: 2, bias: false }],
  ["3x3 stem", { x: [1, 3, 9, 9], o: 7, k: 3, padding: 1 }],
  ["3x3 dense stride 1", { x: [3, 5, 9, 9], o: 6, k: 3, padding: 1, bias: false }],
  ["3x3 without padding on a 3x3 input (1x1 output)", { x: [3, 5, 3, 3], o: 6, k: 3 }],
  ["3x3 channel multiplier 2 (groups = C, O = 2C)", { x: [1, 3, 7, 7], o: 6, k: 3, padding: 1, groups: 3 }],
  ["3x3 dense stride 2", { x: [1, 5, 9, 9], o: 7, k: 3, stride: 2, padding: 1 }],
  ["3x3 dense stride 2 on 5x5 (partial row blocks)", { x: [3, 5, 5, 5], o: 6, k: 3, stride: 2, padding: 1 }],
  ["3x3 grouped, group size 4", { x: [3, 8, 7, 7], o: 6, k: 3, padding: 1, groups: 2 }],
  ["3x3 grouped, group size 8, stride 2", {
    x: [1, 16, 7, 7],
    o: 10,
    k: 3,
    stride: 2,
    padding: 1,
    groups: 2,
  }],
  ["3x3 depthwise stride 1", { x: [3, 5, 9, 9], o: 5, k: 3, padding: 1, groups: 5, bias: false }],
  ["3x3 depthwise stride 2", { x: [1, 5, 9, 9], o: 5, k: 3, stride: 2, padding: 1, groups: 5 }],
  ["7x7 depthwise stride 1", { x: [3, 5, 9, 9], o: 5, k: 7, padding: 3, groups: 5 }],
  ["7x7 depthwise stride 2", { x: [1, 5, 9, 9], o: 5, k: 7, stride: 2, padding: 3, groups: 5, bias: false }],
  ["2x2 stride 2 (downsampling)", { x: [3, 5, 9, 9], o: 6, k: 2, stride: 2 }],
];

Deno.test("conv2d stem on an input without gradient (only weight and bias gradients)", async () => {
  const cfg: Cfg = { x: [3, 3, 9, 9], o: 7, k: 3, padding: 1 };
  await checkOp({
    name: "stem, x without grad",
    shapes: [cfg.x, [7, 3, 3, 3], [7]],
    noGrad: [0],
    gpu: ([x, w, b]) => conv2d(x, w, b, { padding: 1 }),
    cpu: ([x, w, b]) => cpuConv(x, w, b, cfg),
  });
});

for (const [name, cfg] of cases) {
  Deno.test(`conv2d ${name}: forward = CPU, gradients = finite differences`, async () => {
    await check(name, cfg);
  });
}

function maxAbsDiff(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - e[i]));
  return m;
}

interface Golden {
  name: string;
  stride: number;
  padding: number;
  groups: number;
  xShape: number[];
  wShape: number[];
  yShape: number[];
  x: number[];
  w: number[];
  b: number[] | null;
  gy: number[];
  y: number[];
  gx: number[];
  gw: number[];
  gb: number[] | null;
}

Deno.test("conv2d matches PyTorch (tests/fixtures/conv.json)", async () => {
  const url = new URL("./fixtures/conv.json", import.meta.url);
  const { cases } = JSON.parse(await Deno.readTextFile(url)) as { cases: Golden[] };
  const tol = { rtol: 1e-4, atol: 1e-5 };
  const report: string[] = [];
  for (const c of cases) {
    const x = tensor(c.x, c.xShape, { requiresGrad: true });
    const w = tensor(c.w, c.wShape, { requiresGrad: true });
    const b = c.b ? tensor(c.b, [c.b.length], { requiresGrad: true }) : null;
    const y = conv2d(x, w, b, { stride: c.stride, padding: c.padding, groups: c.groups });
    assert.deepEqual(y.shape, c.yShape);
    const gy = tensor(c.gy, c.yShape);
    y.backward(gy);
    const pairs: [Tensor, number[], string][] = [[y, c.y, "y"], [x.grad!, c.gx, "gx"], [w.grad!, c.gw, "gw"]];
    if (b) pairs.push([b.grad!, c.gb!, "gb"]);
    let elementwise = 0, normwise = 0;
    for (const [t, e, what] of pairs) {
      const a = await t.toArray();
      elementwise = Math.max(elementwise, assertClose(a, e, tol, `${c.name} ${what}`));
      normwise = Math.max(normwise, maxAbsDiff(a, e) / Math.max(...e.map(Math.abs)));
    }
    report.push(
      `${c.name}: worst |diff|/(|expected|+1e-5) ${elementwise.toExponential(1)}, ` +
        `worst max|diff|/max|expected| ${normwise.toExponential(1)}`,
    );
    for (const t of [x, w, b, y, gy]) t?.dispose();
  }
  console.log(report.join("\n"));
});

Deno.test("conv2d rejects bad shapes with clear errors", () => {
  const t = (shape: number[]) => tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
  const x = t([2, 6, 5, 5]);
  assert.throws(
    () => conv2d(x, t([4, 4, 3, 3])),
    /conv2d: input has 6 channels but the weight expects 4 in-channels × 1 group = 4 \(input \[2, 6, 5, 5\], weight \[4, 4, 3, 3\]\)/,
  );
  assert.throws(
    () => conv2d(x, t([4, 2, 3, 3]), null, { groups: 4 }),
    /conv2d: groups = 4 does not divide the 6 input channels/,
  );
  assert.throws(
    () => conv2d(x, t([5, 2, 3, 3]), null, { groups: 3 }),
    /conv2d: groups = 3 does not divide the 5 output channels/,
  );
  assert.throws(
    () => conv2d(x, t([4, 6, 9, 9]), null, { padding: 1 }),
    /conv2d: kernel 9×9 is larger than the padded input 7×7/,
  );
  assert.throws(() => conv2d(x, t([4, 6, 3, 3]), t([5])), /conv2d: bias must have shape \[4\].*bias \[5\]/);
  assert.throws(() => conv2d(t([6, 5, 5]), t([4, 6, 3, 3])), /conv2d: input must be 4-D \[N, C, H, W\]/);
  assert.throws(() => conv2d(x, t([4, 6, 3])), /conv2d: weight must be 4-D/);
  assert.throws(
    () => conv2d(x, t([4, 6, 3, 3]), null, { stride: 0 }),
    /conv2d: stride must be a positive integer/,
  );
});

for (const [n, c, o, hw, swaps] of [[2, 64, 68, 8, 0], [3, 64, 68, 4, 4]]) {
  Deno.test(`1×1 conv through the texture GEMM (${n}×${c}→${o} on ${hw}×${hw}) = CPU reference and gradients`, async () => {
    // big enough that every pass takes the texture GEMM (C, O ≥ 64); on 4×4 images the forward and
    // input gradient run as one GEMM over all images (transposed in and out). Gradients are checked
    // against the analytic CPU backward (finite differences over 9,000 inputs would be slow).
    const p = hw * hw;
    const rand = (len: number, seed: number) =>
      Float32Array.from({ length: len }, (_, i) => Math.sin(seed * 1000 + i * 1.7));
    const xs = rand(n * c * p, 1), ws = rand(o * c, 2), bs = rand(o, 3), gs = rand(n * o * p, 4);
    const x = tensor(xs, [n, c, hw, hw], { requiresGrad: true });
    const w = tensor(ws, [o, c, 1, 1], { requiresGrad: true });
    const b = tensor(bs, [o], { requiresGrad: true });
    startCapture();
    const y = conv2d(x, w, b);
    y.backward(tensor(gs, [n, o, hw, hw]));
    const kernels = stopCapture().map((d) => d.label);
    assert.equal(kernels.filter((k) => k === "matmul/texture").length, 3, `kernels: ${kernels}`);
    assert.equal(kernels.filter((k) => k === "gemm1x1/columns").length, swaps, `kernels: ${kernels}`);
    const s = convShape([n, c, hw, hw], o, 1);
    const [x64, w64, g64] = [xs, ws, gs].map((a) => Float64Array.from(a));
    const ey = convForwardRef(x64, w64, Float64Array.from(bs), s), ex = convBackwardInputRef(g64, w64, s);
    const ew = convBackwardWeightRef(g64, x64, s), eb = convBackwardBiasRef(g64, s);
    const tol = { rtol: 1e-4, atol: 1e-4 };
    assertClose(await y.toArray(), ey, tol, "forward");
    assertClose(await x.grad!.toArray(), ex, tol, "input gradient");
    assertClose(await w.grad!.toArray(), ew, tol, "weight gradient");
    assertClose(await b.grad!.toArray(), eb, tol, "bias gradient");
    for (const t of [x, w, b, y]) t.dispose();
  });
}
