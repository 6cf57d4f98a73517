// One training step of the narrow `final` model (widths 16,32,64,128, depths 1,1,3,1, stem 16) with
// the fusions layerscale-residual, depthwise-weight-tree, norm-backward-sums, norm-running-stats and
// depthwise-norm-stats on, and with each forced off: the loss and every parameter gradient agree
// (rel 1e-4), and each fusion records fewer dispatches than its unfused path (depthwise-norm-stats: as
// many, lighter ones). γ gets sizeable values (at its 1e-6 init the branch's gradients would hide in
// the tolerance).

import { buildModel, crossEntropy, Rng, scope, type Tensor } from "../mod.ts";
import { randn } from "../autograd/tensor.ts";
import { withPlanOverride } from "../kernels/planner.ts";
import { startCapture, stopCapture } from "../kernels/runtime.ts";
import { readMany } from "../nn/module.ts";
import { NARROW } from "../models/stages.ts";
import { assertClose, randomArray, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

/** Loss and every parameter gradient of one step on `batch` images, and the labels of its dispatches. */
async function narrowStep(batch: number, override: string, dropPath = 0) {
  const model = buildModel("final", { ...NARROW, seed: 3, dropPath });
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
  const seen = stopCapture().map((d) => d.label);
  const params = model.namedParameters();
  const values = await readMany([loss, ...params.map(([, p]) => p.grad as Tensor)]);
  [loss, x].forEach((t) => t.dispose());
  model.dispose();
  return { names: ["loss", ...params.map(([n]) => n)], values, labels: seen };
}

const count = (labels: string[], k: string) => labels.filter((x) => x === k).length;

// batch 3 (odd); batch 1 is in the op tests, and every further batch size compiles every kernel again
Deno.test("narrow final: loss and every gradient equal with each of these fusions on and off", async () => {
  const on = await narrowStep(3, "fuse=on"); // all on, whatever the profile turns off
  const fusions = [
    "layerscale-residual",
    "depthwise-weight-tree",
    "norm-backward-sums",
    "norm-running-stats",
    "depthwise-norm-stats",
  ];
  for (const fusion of fusions) {
    const off = await narrowStep(3, `fuse.${fusion}=off`);
    assert.deepEqual(on.names, off.names);
    on.values.forEach((v, i) =>
      assertClose(v, off.values[i], { rtol: 1e-4, atol: 1e-6 }, `${fusion}: ${on.names[i]}`)
    );
    if (fusion === "depthwise-norm-stats") {
      // as many dispatches: each block's GroupNorm statistics kernel reads the dwconv's block
      // partials instead of its output twice
      assert.equal(count(on.labels, "norm_stats_parts"), 6);
      assert.equal(count(off.labels, "norm_stats_parts"), 0);
      const stats = (l: string[]) => l.filter((x) => x.startsWith("norm_stats")).length;
      assert.equal(stats(on.labels), stats(off.labels));
      continue;
    }
    assert.ok(
      on.labels.length < off.labels.length,
      `${fusion}: ${on.labels.length} < ${off.labels.length} dispatches`,
    );
  }
  // six blocks: one fused pass each way instead of mul + add forward, two muls + a reduction backward
  assert.equal(count(on.labels, "layerscale_residual"), 6);
  assert.equal(count(on.labels, "layerscale_residual_backward"), 6);
});

Deno.test("narrow final: a drop path that drops in training keeps the unfused layer scale", async () => {
  const { labels } = await narrowStep(3, "", 0.5);
  // stage 0 (one block) has p = 0 and fuses, forward and backward; the later stages drop and do not
  assert.equal(labels.filter((x) => x.startsWith("layerscale_residual")).length, 2);
});
