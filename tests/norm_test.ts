// Norms beyond tests/registry.ts (GroupNorm, LayerNorm, BatchNorm2d training and eval on odd shapes, and
// the PyTorch fixtures): partial affine parameters, an input without gradient, BatchNorm's running
// statistics, zero variance, a large offset, and argument errors.

import { batchNorm2d, groupNorm, layerNorm } from "../autograd/ops/norm.ts";
import { noGrad, Rng, type Tensor, tensor } from "../mod.ts";
import { batchNorm2dRef, groupNormRef, layerNormRef } from "../kernels/reference/norm.ts";
import { pipelineKeys } from "../kernels/runtime.ts";
import { assertClose, checkOp, randomArray, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);

Deno.test("norms with only some parameters, and with an input that needs no gradient", async () => {
  const shape = [3, 5, 9, 9], c = 5;
  await checkOp({
    name: "batchNorm2d_weight_only",
    shapes: [shape, [c]],
    gpu: ([x, w]) => batchNorm2d(x, null, null, w, null, true),
    cpu: ([x, w]) => batchNorm2dRef(x, shape, w, null).y,
    gradTol: { rtol: 2e-3, atol: 2e-4 },
  });
  await checkOp({
    name: "groupNorm_bias_only_x_no_grad",
    shapes: [shape, [c]],
    noGrad: [0],
    gpu: ([x, b]) => groupNorm(x, 5, null, b),
    cpu: ([x, b]) => groupNormRef(x, shape, 5, null, b),
  });
  await checkOp({
    name: "layerNorm_params_only",
    shapes: [[3, 7], [7], [7]],
    noGrad: [0],
    gpu: ([x, w, b]) => layerNorm(x, 7, w, b),
    cpu: ([x, w, b]) => groupNormRef(x, [3, 7], 1, w, b),
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
      const ref = batchNorm2dRef(x64, shape, null, null);
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
    cpu: ([x, w, b]) => groupNormRef(x, shape, 1, w, b),
    gradTol: { rtol: 2e-3, atol: 2e-3 },
  });
  await checkOp({
    name: "batchNorm2d_constant",
    shapes: [shape, [6], [6]],
    init: constant,
    gpu: ([x, w, b]) => batchNorm2d(x, null, null, w, b, true),
    cpu: ([x, w, b]) => batchNorm2dRef(x, shape, w, b).y,
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
    cpu: ([x]) => groupNormRef(x, shape, 1, null, null),
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

/** The pipelines of this file's kernels (statistics, by-rows backward sums) among `keys`. */
const normKeys = (keys: string[]) => keys.filter((k) => /^norm_/.test(k));

Deno.test("norms at two batch sizes match the references and share their pipelines", async () => {
  const run = async (n: number) => {
    const rm = tensor(new Float32Array(4)), rv = tensor(new Float32Array(4).fill(1));
    for (const [name, shape] of [["groupNorm", [n, 6, 5, 5]], ["batchNorm2d", [n, 4, 6, 6]]] as const) {
      const c = shape[1];
      await checkOp({
        name: `${name}_n${n}`,
        shapes: [[...shape], [c], [c]],
        gpu: ([x, w, b]) => name === "groupNorm" ? groupNorm(x, 3, w, b) : batchNorm2d(x, rm, rv, w, b, true),
        cpu: ([x, w, b]) =>
          name === "groupNorm" ? groupNormRef(x, [...shape], 3, w, b) : batchNorm2dRef(x, [...shape], w, b).y,
        gradTol: { rtol: 2e-3, atol: 2e-4 },
      });
    }
    // a batch statistic short enough at the nominal batch for one invocation per channel
    await checkOp({
      name: `batchNorm2d_1x1_n${n}`,
      shapes: [[n, 3, 1, 1]],
      gpu: ([x]) => batchNorm2d(x, null, null, null, null, true),
      cpu: ([x]) => batchNorm2dRef(x, [n, 3, 1, 1], null, null).y,
      gradTol: { rtol: 2e-3, atol: 2e-3 },
    });
    await checkOp({
      name: `layerNorm_n${n}`,
      shapes: [[n, 3, 8], [8], [8]],
      gpu: ([x, w, b]) => layerNorm(x, 8, w, b),
      cpu: ([x, w, b]) => layerNormRef(x, 8, w, b),
    });
    rm.dispose();
    rv.dispose();
  };
  await run(2);
  const before = new Set(pipelineKeys());
  await run(5);
  assert.deepEqual(normKeys(pipelineKeys().filter((k) => !before.has(k))), []);
});
