// Normalisation passes folded together: the backward with its sums in one reduction kernel (fusion
// "norm-backward-sums", kernels/reduce.ts reduceGroups), or for GroupNorm and BatchNorm by rows (row
// sums, then one small reduction over them), equals the unfused path (a reduction for the two means per
// statistic, another for dw and db) in every gradient, on odd shapes, with rows split into chunks and
// with only some gradients wanted, and records the dispatches it should; BatchNorm's running statistics
// updated by the
// statistics kernel ("norm-running-stats") equal the two update passes. The ops against the CPU
// reference and PyTorch: tests/registry_test.ts (the sweep and the fixtures).

import { batchNorm2d, groupNorm, layerNorm, Rng, scope, type Tensor, tensor } from "../mod.ts";
import { randn } from "../autograd/tensor.ts";
import { withPlanOverride } from "../kernels/planner.ts";
import { startCapture, stopCapture } from "../kernels/runtime.ts";
import { readMany } from "../nn/module.ts";
import { planFusions } from "../nn/fusions.ts";
import { assertClose, randomArray, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

// each op takes the fusions the plan override sets
type Op = (x: Tensor, w: Tensor | null, b: Tensor | null) => Tensor;
const gn = (g: number): Op => (x, w, b) => groupNorm(x, g, w, b, 1e-5, planFusions());
const bn: Op = (x, w, b) => batchNorm2d(x, null, null, w, b, true, 0.1, 1e-5, planFusions());
const ln = (l: number): Op => (x, w, b) => layerNorm(x, l, w, b, 1e-5, planFusions());
// name, shape, channels, op, whether its sums go by rows
const cases: [string, number[], number, Op, boolean][] = [
  ["groupNorm(1)", [3, 5, 9, 9], 5, gn(1), true],
  ["groupNorm(3)", [1, 6, 9, 9], 6, gn(3), true],
  ["groupNorm(1)", [1, 4, 32, 32], 4, gn(1), true], // 16 chunks per row, vec4
  ["groupNorm(2)", [2, 4, 15, 15], 4, gn(2), true], // three chunks of 75 (not a multiple of 4)
  ["layerNorm(7)", [3, 7], 7, ln(7), false],
  ["layerNorm(300)", [2, 300], 300, ln(300), false],
  ["batchNorm2d", [3, 5, 9, 9], 5, bn, true],
  ["batchNorm2d", [2, 3, 7, 7], 3, bn, true],
];
// which of x, weight, bias take a gradient (a parameter left out is absent)
const wants: [boolean, boolean | null, boolean | null][] = [
  [true, true, true],
  [false, true, true],
  [true, null, null],
  [true, true, null],
];

async function run(op: Op, shape: number[], c: number, want: (typeof wants)[number], spec: string) {
  const x = randn(shape, new Rng(1), { requiresGrad: want[0] });
  const w = want[1] === null
    ? null
    : tensor(Float32Array.from(randomArray(new Rng(2), c)), [c], { requiresGrad: want[1] });
  const b = want[2] === null
    ? null
    : tensor(Float32Array.from(randomArray(new Rng(3), c)), [c], { requiresGrad: want[2] });
  const up = randn(shape, new Rng(4));
  const leaves = [x, w, b].filter((t): t is Tensor => t !== null && t.requiresGrad);
  let backward = 0;
  withPlanOverride(spec, () =>
    scope(() => {
      const y = op(x, w, b);
      startCapture();
      y.backward(up);
      backward = stopCapture().length;
    }));
  const grads = await readMany(leaves.map((t) => t.grad!));
  [x, w, b, up].forEach((t) => t?.dispose());
  return { grads, backward };
}

for (const [name, shape, c, op, rows] of cases) {
  Deno.test(`${name} of [${shape}]: backward fused = unfused${rows ? ", by rows" : ""}`, async () => {
    for (const want of wants) {
      const on = await run(op, shape, c, want, "");
      const off = await run(op, shape, c, want, "fuse.norm-backward-sums=off");
      on.grads.forEach((g, i) =>
        assertClose(g, off.grads[i], { rtol: 1e-4, atol: 1e-6 }, `${name} ${want} grad ${i}`)
      );
      const affine = want[1] || want[2];
      // one reduction fewer; by rows, the row sums and their reduction take the two reductions' place
      // (with only dx wanted, one more than the unfused single reduction)
      const fewer = rows ? (want[0] ? (affine ? 0 : -1) : 0) : (want[0] && affine ? 1 : 0);
      assert.equal(on.backward, off.backward - fewer, `${name} ${want}: dispatches`);
    }
  });
}

Deno.test("batchNorm2d running statistics updated by the statistics kernel = the two update passes", async () => {
  for (const shape of [[3, 5, 9, 9], [1, 3, 20, 20], [3, 7]]) {
    const c = shape[1];
    const stats = async (spec: string) => {
      const rm = tensor(Float32Array.from(randomArray(new Rng(5), c)), [c]);
      const rv = tensor(Float32Array.from(randomArray(new Rng(6), c).map((v) => 1 + v / 2)), [c]);
      let forward = 0;
      for (const seed of [1, 2]) {
        const x = randn(shape, new Rng(seed));
        startCapture();
        withPlanOverride(
          spec,
          () => scope(() => void batchNorm2d(x, rm, rv, null, null, true, 0.3, 1e-5, planFusions())),
        );
        forward = stopCapture().length;
        x.dispose();
      }
      const values = await readMany([rm, rv]);
      [rm, rv].forEach((t) => t.dispose());
      return { values, forward };
    };
    const on = await stats(""), off = await stats("fuse.norm-running-stats=off");
    assertClose(on.values[0], off.values[0], { rtol: 1e-6, atol: 1e-7 }, `[${shape}] running mean`);
    assertClose(on.values[1], off.values[1], { rtol: 1e-6, atol: 1e-7 }, `[${shape}] running variance`);
    assert.equal(on.forward, off.forward - 2, `[${shape}]: the two update passes are gone`);
  }
});
