// The fused layer scale + residual add (fusion "layerscale-residual"): the op against its CPU reference
// and finite differences, the backward kernel against the reference's gradients (one chunk and split
// chunks), the op equal to the unfused add(mul(γ, branch), x), and one pipeline for every batch size.
// The model with the fusion on and off: tests/fused_step_test.ts.

import { add, mul, reshape, Rng, scope, tensor } from "../mod.ts";
import { layerScaleResidual } from "../autograd/ops/layerscale.ts";
import { empty, randn } from "../autograd/tensor.ts";
import { layerScaleChunks, layerScaleResidualBackward } from "../kernels/layerscale.ts";
import { layerScaleResidualBackwardRef, layerScaleResidualRef } from "../kernels/reference/layerscale.ts";
import { readMany } from "../nn/module.ts";
import { pipelineKeys } from "../kernels/runtime.ts";
import { assertClose, checkOp, randomArray, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

const shapeOf = (s: number[]) => ({ n: s[0], c: s[1], p: s[2] * s[3] });

for (const s of [[1, 3, 9, 9], [3, 5, 9, 9], [3, 6, 1, 1]]) {
  Deno.test(`layerScaleResidual on [${s}]: forward = reference, gradients = finite differences`, async () => {
    await checkOp({
      name: "layerScaleResidual",
      shapes: [s, [s[1]], s],
      gpu: ([x, g, b]) => layerScaleResidual(x, g, b),
      cpu: ([x, g, b]) => layerScaleResidualRef(x, g, b, shapeOf(s)),
    });
  });
}

/** The backward kernel on [n, c, h, w] against the reference's gradients. */
async function backwardMatches(s: number[]): Promise<void> {
  const ls = shapeOf(s);
  const rng = new Rng(5);
  const n = s.reduce((a, b) => a * b, 1);
  const [g, br, gm] = [randomArray(rng, n), randomArray(rng, n), randomArray(rng, s[1])];
  const ref = layerScaleResidualBackwardRef(g, br, gm, ls);
  const t = [
    tensor(Float32Array.from(g), s),
    tensor(Float32Array.from(br), s),
    tensor(Float32Array.from(gm), [s[1]]),
  ];
  const [db, dg] = [empty(s), empty([s[1]])];
  layerScaleResidualBackward(t[0].binding(), t[1].binding(), t[2].binding(), db.binding(), dg.binding(), ls);
  const [dbv, dgv] = await readMany([db, dg]);
  assertClose(dbv, ref.dbranch, {}, `dbranch [${s}]`);
  assertClose(dgv, ref.dgamma, {}, `dgamma [${s}]`);
  [...t, db, dg].forEach((x) => x.dispose());
}

Deno.test("layerscale backward kernel = reference gradients, with one chunk and with split chunks", async () => {
  // [2, 1, 64, 72]: one channel of 9216 elements splits into chunks (a second pass adds them)
  assert.ok(layerScaleChunks(shapeOf([2, 1, 64, 72])).chunks > 1, "the split path is exercised");
  for (const s of [[3, 5, 9, 9], [2, 1, 64, 72]]) await backwardMatches(s);
});

Deno.test("layerScaleResidual = add(mul(γ, branch), x) in values and gradients", async () => {
  const s = [3, 7, 9, 9];
  const leaves = () => [randn(s, new Rng(1)), randn([7], new Rng(2)), randn(s, new Rng(3))];
  const run = async (fused: boolean) => {
    const xs = leaves();
    xs.forEach((t) => (t.requiresGrad = true));
    const up = tensor(Float32Array.from(randomArray(new Rng(4), 3 * 7 * 81)), s);
    const y = scope(() => {
      const out = fused
        ? layerScaleResidual(xs[0], xs[1], xs[2])
        : add(mul(reshape(xs[1], [7, 1, 1]), xs[2]), xs[0]);
      out.backward(up);
      return out;
    });
    const vals = await readMany([y, ...xs.map((t) => t.grad!)]);
    [y, up, ...xs].forEach((t) => t.dispose());
    return vals;
  };
  const [a, b] = [await run(true), await run(false)];
  ["out", "dx", "dγ", "dbranch"].forEach((w, i) => assertClose(a[i], b[i], { rtol: 1e-5, atol: 1e-6 }, w));
});

Deno.test("layerScaleResidual at two batch sizes: one pipeline serves both, split chunks included", async () => {
  const run = async (n: number) => {
    const s = [n, 3, 4, 4];
    await checkOp({
      name: `layerScaleResidual [${s}]`,
      shapes: [s, [s[1]], s],
      gpu: ([x, g, b]) => layerScaleResidual(x, g, b),
      cpu: ([x, g, b]) => layerScaleResidualRef(x, g, b, shapeOf(s)),
    });
    // one channel of n·4608 elements: n chunks (a second pass adds them)
    const ls = shapeOf([n, 1, 64, 72]);
    assert.equal(layerScaleChunks(ls).chunks, n);
    await backwardMatches([n, 1, 64, 72]);
  };
  await run(2);
  const before = new Set(pipelineKeys());
  await run(3);
  assert.deepEqual(pipelineKeys().filter((k) => !before.has(k)), []);
});
