// The fused layer scale + residual add (fusion "layerscale-residual"): the op against its CPU reference
// and finite differences, the backward kernel against the reference's gradients (one chunk and split
// chunks), and the narrow `final` model's loss and every gradient equal with the fusion on and off.

import { add, buildModel, crossEntropy, mul, reshape, Rng, scope, type Tensor, tensor } from "../mod.ts";
import { layerScaleResidual } from "../autograd/ops/layerscale.ts";
import { empty, randn } from "../autograd/tensor.ts";
import { layerScaleChunks, layerScaleResidualBackward } from "../kernels/layerscale.ts";
import { layerScaleResidualBackwardRef, layerScaleResidualRef } from "../kernels/reference/layerscale.ts";
import { withPlanOverride } from "../kernels/planner.ts";
import { startCapture, stopCapture } from "../kernels/runtime.ts";
import { readMany } from "../nn/module.ts";
import { NARROW } from "../experiments/stages.ts";
import { assertClose, checkOp, randomArray, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

const OFF = "fuse.layerscale-residual=off";
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

Deno.test("layerscale backward kernel = reference gradients, with one chunk and with split chunks", async () => {
  // [2, 1, 64, 72]: one channel of 9216 elements splits into chunks (a second pass adds them)
  for (const s of [[3, 5, 9, 9], [2, 1, 64, 72]]) {
    const ls = shapeOf(s);
    if (s[1] === 1) assert.ok(layerScaleChunks(ls).chunks > 1, "the split path is exercised");
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
    layerScaleResidualBackward(
      t[0].binding(),
      t[1].binding(),
      t[2].binding(),
      db.binding(),
      dg.binding(),
      ls,
    );
    const [dbv, dgv] = await readMany([db, dg]);
    assertClose(dbv, ref.dbranch, {}, `dbranch [${s}]`);
    assertClose(dgv, ref.dgamma, {}, `dgamma [${s}]`);
    [...t, db, dg].forEach((x) => x.dispose());
  }
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

/** Loss and every parameter gradient of one step of the narrow `final` model on `batch` images. */
async function narrowStep(batch: number, override: string, dropPath = 0) {
  const model = buildModel("final", { ...NARROW, seed: 3, dropPath });
  // γ at its 1e-6 init would hide the branch's gradients: give the layer scales sizeable values
  const state = await model.stateDict();
  const rng = new Rng(9);
  for (const [k, v] of Object.entries(state)) {
    if (k.endsWith("layer_scaler.gamma")) v.set(Float32Array.from(randomArray(rng, v.length)));
  }
  model.loadStateDict(state);
  model.train();
  const x = randn([batch, 3, 32, 32], new Rng(7));
  const labels = Int32Array.from({ length: batch }, (_, i) => (3 * i) % 10);
  startCapture();
  const loss = withPlanOverride(override, () =>
    scope(() => {
      const l = crossEntropy(model.forward(x), labels);
      l.backward();
      return l;
    }));
  const labelsSeen = stopCapture().map((d) => d.label);
  const params = model.namedParameters();
  const values = await readMany([loss, ...params.map(([, p]) => p.grad as Tensor)]);
  [loss, x].forEach((t) => t.dispose());
  model.dispose();
  return { names: ["loss", ...params.map(([n]) => n)], values, labels: labelsSeen };
}

// batch 1 is the op tests' [1, 3, 9, 9]; a second batch size would compile every kernel again
for (const batch of [3]) {
  Deno.test(`narrow final, batch ${batch}: loss and every gradient equal with layerscale-residual on and off`, async () => {
    const on = await narrowStep(batch, "");
    const off = await narrowStep(batch, OFF);
    assert.deepEqual(on.names, off.names);
    on.values.forEach((v, i) => assertClose(v, off.values[i], { rtol: 1e-4, atol: 1e-6 }, on.names[i]));
    const count = (l: string[], k: string) => l.filter((x) => x === k).length;
    // six blocks: one fused pass each way instead of mul + add forward, two muls + a reduction backward
    assert.equal(count(on.labels, "layerscale_residual"), 6);
    assert.equal(count(on.labels, "layerscale_residual_backward"), 6);
    assert.equal(count(off.labels, "layerscale_residual"), 0);
    assert.ok(on.labels.length < off.labels.length, `${on.labels.length} < ${off.labels.length} dispatches`);
  });
}

Deno.test("a drop path that drops in training keeps the unfused path", async () => {
  const { labels } = await narrowStep(3, "", 0.5);
  // stage 0 (one block) has p = 0 and fuses, forward and backward; the later stages drop and do not
  assert.equal(labels.filter((x) => x.startsWith("layerscale_residual")).length, 2);
});
