// The pipelines of a run, compiled before its first step: a dry run of one training step and one
// evaluation forward lists them (models/plan.ts stepPipelines), and a real run at the training batch,
// at a partial last batch and in evaluation then creates no other pipeline than the optimizer's.

import assert from "node:assert/strict";
import { Rng } from "../autograd/random.ts";
import { noGrad, randn, scope, tensor } from "../autograd/tensor.ts";
import { compilePipelines, pipelineKeys, sync } from "../kernels/runtime.ts";
import { stepPipelines } from "../models/plan.ts";
import { buildModel } from "../models/zoo.ts";
import { AdamW } from "../nn/optim.ts";
import { trainStep } from "../training/step.ts";
import { setup } from "./helpers.ts";

await setup();

const SMALL = { widths: [8, 16, 32, 64], depths: [1, 1, 1, 1], stemFeatures: 8, seed: 0 };

for (const [stage, evalMode] of [["final", "train"], ["base", "eval"]] as const) {
  Deno.test(`${stage}: the dry run lists every pipeline of training (batch 4, then 3) and evaluation in ${evalMode} mode`, async () => {
    const opts = stage === "final" ? SMALL : { seed: 0 };
    const requests = stepPipelines(stage, opts, 4, evalMode);
    assert.ok(requests.length > 20, `${requests.length} pipelines listed`);
    let calls = 0, last = -1;
    await compilePipelines(requests, (done, total) => {
      calls++;
      assert.equal(total, requests.length);
      assert.ok(done >= last);
      last = done;
    });
    assert.equal(last, requests.length);
    assert.ok(calls >= 2);
    assert.deepEqual(stepPipelines(stage, opts, 4, evalMode), [], "nothing left to compile");

    const before = new Set(pipelineKeys());
    const model = buildModel(stage, opts);
    const optimizer = new AdamW(model.parameters(), { lr: 1e-3 });
    const rng = new Rng(1);
    for (const b of [4, 3]) {
      model.train();
      const x = randn([b, 3, 32, 32], rng),
        y = tensor(Float32Array.from({ length: b }, (_, i) => i % 10), [b]);
      trainStep({ model, optimizer }, { x, y });
      x.dispose();
      y.dispose();
      if (evalMode === "eval") model.eval();
      noGrad(() => scope(() => void model.forward(randn([b, 3, 32, 32], rng))));
    }
    await sync();
    const fresh = pipelineKeys().filter((k) => !before.has(k));
    assert.deepEqual(fresh.map((k) => k.split(":")[0]), ["adamw"], fresh.join("\n"));
  });
}
