import { batchNorm2d, groupNorm, layerNorm } from "../autograd/ops/norm.ts";
import { noGrad, Rng, type Tensor, tensor } from "../mod.ts";
import { assertClose, checkOp, randomArray, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** GroupNorm in f64 on x [N, C, *]; LayerNorm over the last dim L is GroupNorm(1) on [rows, L]. */
function cpuGroupNorm(
  x: Float64Array,
  shape: number[],
  groups: number,
  w: Float64Array | null,
  b: Float64Array | null,
  eps = 1e-5,
): Float64Array {
  const [n, c] = shape, m = prod(shape.slice(2)), cg = c / groups, len = cg * m;
  const y = new Float64Array(x.length);
  for (let i = 0; i < n * groups; i++) {
    const off = i * len;
    let mu = 0;
    for (let r = 0; r < len; r++) mu += x[off + r];
    mu /= len;
    let v = 0;
    for (let r = 0; r < len; r++) v += (x[off + r] - mu) ** 2;
    v /= len;
    const rs = 1 / Math.sqrt(v + eps);
    for (let r = 0; r < len; r++) {
      const ch = (i % groups) * cg + Math.floor(r / m);
      y[off + r] = (x[off + r] - mu) * rs * (w ? w[ch] : 1) + (b ? b[ch] : 0);
    }
  }
  return y;
}

/** BatchNorm with batch statistics in f64; also returns the statistics (biased variance). */
function cpuBatchNorm(
  x: Float64Array,
  shape: number[],
  w: Float64Array | null,
  b: Float64Array | null,
  eps = 1e-5,
): { y: Float64Array; mean: Float64Array; variance: Float64Array } {
  const [n, c] = shape, m = prod(shape.slice(2));
  const y = new Float64Array(x.length), mean = new Float64Array(c), variance = new Float64Array(c);
  for (let ch = 0; ch < c; ch++) {
    let mu = 0;
    for (let i = 0; i < n; i++) for (let r = 0; r < m; r++) mu += x[(i * c + ch) * m + r];
    mu /= n * m;
    let v = 0;
    for (let i = 0; i < n; i++) for (let r = 0; r < m; r++) v += (x[(i * c + ch) * m + r] - mu) ** 2;
    v /= n * m;
    mean[ch] = mu;
    variance[ch] = v;
    const rs = 1 / Math.sqrt(v + eps);
    for (let i = 0; i < n; i++) {
      for (let r = 0; r < m; r++) {
        const k = (i * c + ch) * m + r;
        y[k] = (x[k] - mu) * rs * (w ? w[ch] : 1) + (b ? b[ch] : 0);
      }
    }
  }
  return { y, mean, variance };
}

const groupCases: [number[], number, boolean][] = [
  [[3, 6, 9, 9], 1, true], // GroupNorm(1): one workgroup (tree) per sample
  [[1, 6, 9, 9], 3, true], // one invocation per statistic
  [[3, 5, 4, 4], 5, false], // no affine
  [[3, 5, 9, 9], 1, true],
];
for (const [shape, groups, affine] of groupCases) {
  Deno.test(`groupNorm(${groups}) on ${shape}${affine ? " with weight and bias" : ""}`, async () => {
    const c = shape[1];
    await checkOp({
      name: "groupNorm",
      shapes: affine ? [shape, [c], [c]] : [shape],
      gpu: ([x, w, b]) => groupNorm(x, groups, w, b),
      cpu: ([x, w, b]) => cpuGroupNorm(x, shape, groups, w ?? null, b ?? null),
      gradTol: { rtol: 2e-3, atol: 2e-4 },
    });
  });
}

const layerCases: [number[], number[]][] = [
  [[3, 7], [7]],
  [[2, 300], [300]], // tree path
  [[2, 3, 5], [3, 5]],
];
for (const [shape, ns] of layerCases) {
  Deno.test(`layerNorm over ${ns} of ${shape}`, async () => {
    const l = prod(ns);
    await checkOp({
      name: "layerNorm",
      shapes: [shape, ns, ns],
      gpu: ([x, w, b]) => layerNorm(x, ns, w, b),
      cpu: ([x, w, b]) => cpuGroupNorm(x, [x.length / l, l], 1, w, b),
      gradTol: { rtol: 2e-3, atol: 2e-4 },
    });
  });
}

Deno.test("layerNorm without affine, normalizedShape as a number", async () => {
  await checkOp({
    name: "layerNorm",
    shapes: [[3, 9]],
    gpu: ([x]) => layerNorm(x, 9),
    cpu: ([x]) => cpuGroupNorm(x, [3, 9], 1, null, null),
  });
});

const bnCases: number[][] = [[3, 5, 9, 9], [1, 5, 9, 9], [3, 5, 11, 11], [3, 7]];
for (const shape of bnCases) {
  Deno.test(`batchNorm2d training on ${shape}`, async () => {
    const c = shape[1];
    await checkOp({
      name: "batchNorm2d",
      shapes: [shape, [c], [c]],
      gpu: ([x, w, b]) => batchNorm2d(x, null, null, w, b, true),
      cpu: ([x, w, b]) => cpuBatchNorm(x, shape, w, b).y,
      gradTol: { rtol: 2e-3, atol: 2e-4 },
    });
  });
}

Deno.test("norms with only some parameters, and with an input that needs no gradient", async () => {
  const shape = [3, 5, 9, 9], c = 5;
  await checkOp({
    name: "batchNorm2d_weight_only",
    shapes: [shape, [c]],
    gpu: ([x, w]) => batchNorm2d(x, null, null, w, null, true),
    cpu: ([x, w]) => cpuBatchNorm(x, shape, w, null).y,
    gradTol: { rtol: 2e-3, atol: 2e-4 },
  });
  await checkOp({
    name: "groupNorm_bias_only_x_no_grad",
    shapes: [shape, [c]],
    noGrad: [0],
    gpu: ([x, b]) => groupNorm(x, 5, null, b),
    cpu: ([x, b]) => cpuGroupNorm(x, shape, 5, null, b),
  });
  await checkOp({
    name: "layerNorm_params_only",
    shapes: [[3, 7], [7], [7]],
    noGrad: [0],
    gpu: ([x, w, b]) => layerNorm(x, 7, w, b),
    cpu: ([x, w, b]) => cpuGroupNorm(x, [3, 7], 1, w, b),
  });
});

Deno.test("batchNorm2d eval uses the running statistics", async () => {
  const shape = [3, 5, 9, 9], c = 5, m = 81;
  const eps = 1e-5;
  await checkOp({
    name: "batchNorm2d_eval",
    shapes: [shape, [c], [c], [c], [c]],
    noGrad: [3, 4],
    init: (rng, s, i) => {
      const a = randomArray(rng, prod(s));
      return i === 4 ? a.map((v) => 0.5 + Math.abs(v)) : a; // a positive running variance
    },
    gpu: ([x, w, b, rm, rv]) => batchNorm2d(x, rm, rv, w, b, false),
    cpu: ([x, w, b, rm, rv]) =>
      x.map((v, k) => {
        const ch = Math.floor(k / m) % c;
        return (v - rm[ch]) / Math.sqrt(rv[ch] + eps) * w[ch] + b[ch];
      }),
  });
});

for (const shape of [[3, 5, 9, 9], [3, 5, 11, 11]]) {
  Deno.test(`batchNorm2d running statistics after two training steps on ${shape}`, async () => {
    const c = 5, n = prod(shape) / c;
    const rng = new Rng(7);
    const rm = tensor(new Float32Array(c)), rv = tensor(new Float32Array(c).fill(1));
    const erm = new Float64Array(c), erv = new Float64Array(c).fill(1);
    for (let step = 0; step < 2; step++) {
      const x64 = randomArray(rng, prod(shape), 2).map((v) => Math.fround(v + step));
      const x = tensor(Float32Array.from(x64), shape);
      const y = noGrad(() => batchNorm2d(x, rm, rv, null, null, true, 0.1));
      const ref = cpuBatchNorm(x64, shape, null, null);
      assertClose(await y.toArray(), ref.y, {}, "batchNorm2d output");
      for (let ch = 0; ch < c; ch++) {
        erm[ch] = 0.9 * erm[ch] + 0.1 * ref.mean[ch];
        erv[ch] = 0.9 * erv[ch] + 0.1 * ref.variance[ch] * n / (n - 1);
      }
      x.dispose();
      y.dispose();
    }
    assertClose(await rm.toArray(), erm, {}, "running mean");
    assertClose(await rv.toArray(), erv, {}, "running var");
    rm.dispose();
    rv.dispose();
  });
}

Deno.test("norms of a constant input (zero variance) are finite", async () => {
  const shape = [3, 6, 9, 9];
  const constant = (_r: Rng, s: number[], i: number) =>
    i === 0 ? new Float64Array(prod(s)).fill(0.7) : randomArray(new Rng(i), prod(s));
  await checkOp({
    name: "groupNorm_constant",
    shapes: [shape, [6], [6]],
    init: constant,
    gpu: ([x, w, b]) => groupNorm(x, 1, w, b),
    cpu: ([x, w, b]) => cpuGroupNorm(x, shape, 1, w, b),
    gradTol: { rtol: 2e-3, atol: 2e-3 },
  });
  await checkOp({
    name: "batchNorm2d_constant",
    shapes: [shape, [6], [6]],
    init: constant,
    gpu: ([x, w, b]) => batchNorm2d(x, null, null, w, b, true),
    cpu: ([x, w, b]) => cpuBatchNorm(x, shape, w, b).y,
    gradTol: { rtol: 2e-3, atol: 2e-3 },
  });
});

Deno.test("groupNorm of a large offset with a small spread (two-pass variance)", async () => {
  const shape = [1, 6, 9, 9];
  await checkOp({
    name: "groupNorm_offset",
    shapes: [shape],
    init: (r, s) => randomArray(r, prod(s), 0.05).map((v) => Math.fround(20 + v)),
    gpu: ([x]) => groupNorm(x, 1),
    cpu: ([x]) => cpuGroupNorm(x, shape, 1, null, null),
    gradTol: { rtol: 2e-3, atol: 2e-3 },
  });
});

Deno.test("norms reject bad shapes with clear errors", () => {
  const x = tensor(new Float32Array(2 * 6 * 3), [2, 6, 3]);
  const w5 = tensor(new Float32Array(5));
  const t: Tensor[] = [x, w5];
  assert.throws(() => groupNorm(x, 4), /groupNorm: 4 groups do not divide the 6 channels/);
  assert.throws(() => groupNorm(x, 2, w5), /groupNorm: weight \[5\]/);
  assert.throws(() => layerNorm(x, [4]), /layerNorm: normalized shape \[4\]/);
  assert.throws(() => batchNorm2d(x, w5, w5, null, null, false), /batchNorm2d: runningMean \[5\]/);
  assert.throws(
    () => batchNorm2d(tensor([1, 2], [1, 2]), null, null, null, null, true),
    /more than 1 value per channel/,
  );
  t.forEach((a) => a.dispose());
});
