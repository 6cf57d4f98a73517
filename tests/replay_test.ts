// Step replay (training/step.ts): steps replayed from a recording give bit for bit what eager steps
// give — losses, parameters, AdamW's moments and step count, BatchNorm's running statistics and
// num_batches_tracked — across a learning-rate change, a partial last batch, an evaluation in between,
// and a state round trip into a fresh model and optimizer (a resume).

import assert from "node:assert/strict";
import { Rng } from "../autograd/random.ts";
import { noGrad, randn, scope, type Tensor, tensor } from "../autograd/tensor.ts";
import { buildModel, type ModelOptions } from "../models/zoo.ts";
import { AdamW, type AdamWState, CosineAnnealingLR } from "../nn/optim.ts";
import type { StateDict } from "../nn/module.ts";
import { lastStepMode, setReplay, type StepMode, trainStepLoss } from "../training/step.ts";
import { GpuMetrics } from "../training/metrics.ts";
import { setup } from "./helpers.ts";

await setup();

const SMALL: ModelOptions = { widths: [8, 16, 32, 64], depths: [1, 1, 1, 1], stemFeatures: 8, seed: 0 };

interface Outcome {
  losses: number[];
  modes: StepMode[];
  model: StateDict;
  optimizer: AdamWState;
  metrics: number[];
}

/** Batches of 4 and a partial one of 3, per epoch: two epochs, an evaluation after each. */
const SCHEDULE = [[4, 4, 4, 3], [4, 4, 4, 3]];

async function run(
  stage: string,
  opts: ModelOptions,
  replay: boolean,
  resumeAfter: number,
): Promise<Outcome> {
  setReplay(replay);
  const data = new Rng(7);
  let model = buildModel(stage, opts);
  let optimizer = new AdamW(model.parameters(), { lr: 0.004, weightDecay: 0.05 });
  let scheduler = new CosineAnnealingLR(optimizer, { tMax: 2 });
  const metrics = new GpuMetrics();
  const out: Outcome = { losses: [], modes: [], model: {}, optimizer: {} as AdamWState, metrics: [] };
  let step = 0;
  for (const [epoch, sizes] of SCHEDULE.entries()) {
    model.train();
    for (const b of sizes) {
      if (step === resumeAfter) {
        // a resume: the state into a fresh model and optimizer, the schedule where it was
        const [m, o] = [await model.stateDict(), await optimizer.stateDict()];
        optimizer.dispose();
        model = buildModel(stage, { ...opts, seed: 99 });
        model.loadStateDict(m);
        model.train();
        optimizer = new AdamW(model.parameters(), { lr: 0.004, weightDecay: 0.05 });
        optimizer.loadStateDict(o);
        scheduler = new CosineAnnealingLR(optimizer, { tMax: 2 });
        for (let e = 0; e < epoch; e++) scheduler.step();
      }
      const x = randn([b, 3, 32, 32], data),
        y = tensor(Float32Array.from({ length: b }, () => data.int(10)), [b]);
      const loss: Tensor = trainStepLoss({ model, optimizer, metrics }, { x, y });
      out.modes.push(lastStepMode());
      out.losses.push(await loss.item());
      for (const t of [loss, x, y]) t.dispose();
      step++;
    }
    scheduler.step();
    // an evaluation in between, in eval mode, with the pool in use
    model.eval();
    noGrad(() => scope(() => void model.forward(randn([5, 3, 32, 32], data))));
  }
  out.model = await model.stateDict();
  out.optimizer = await optimizer.stateDict();
  const m = await metrics.read();
  out.metrics = [m.lossSum, m.correct, m.count];
  optimizer.dispose();
  setReplay(true);
  return out;
}

function assertSame(a: Outcome, b: Outcome): void {
  assert.deepEqual(b.losses, a.losses);
  assert.deepEqual(Object.keys(b.model), Object.keys(a.model));
  for (const k of Object.keys(a.model)) assert.deepEqual(b.model[k], a.model[k], k);
  assert.equal(b.optimizer.step, a.optimizer.step);
  assert.equal(b.optimizer.lr, a.optimizer.lr);
  for (const k of Object.keys(a.optimizer.tensors)) {
    assert.deepEqual(b.optimizer.tensors[k], a.optimizer.tensors[k], `optimizer ${k}`);
  }
  assert.deepEqual(b.metrics, a.metrics);
}

for (const [stage, opts] of [["final", SMALL], ["base", { seed: 0 }]] as const) {
  Deno.test(`${stage}: replayed steps are bit for bit eager steps (lr change, partial batch, evaluation, resume)`, async () => {
    const eager = await run(stage, opts, false, 5);
    const replayed = await run(stage, opts, true, 5);
    assert.ok(eager.modes.every((m) => m === "eager"));
    // epoch 1: record, replay, replay, the partial batch recorded; resume at step 5 records afresh
    assert.deepEqual(replayed.modes, [
      "recorded",
      "replayed",
      "replayed",
      "recorded",
      "recorded",
      "recorded",
      "replayed",
      "recorded",
    ]);
    assertSame(eager, replayed);
    if (stage === "base") assert.ok(Object.keys(eager.model).some((k) => k.endsWith("num_batches_tracked")));
  });
}
