// End to end on real CIFAR-10: the narrow `final` model learns, a run writes its results and
// checkpoints, resume after an interrupt reproduces an uninterrupted run, and memory stays flat.

import assert from "node:assert/strict";
import { poolStats, tensor } from "../mod.ts";
import { openCifar10 } from "../data/cifar10.ts";
import { NARROW, parseTrainArgs, type TrainConfig } from "../experiments/config.ts";
import { buildRunModel, trainRun } from "../experiments/trainer.ts";
import { loadSafetensors } from "../experiments/files.ts";
import { AdamW } from "../nn/optim.ts";
import { trainStep, trainStepLoss } from "../training/step.ts";
import { runLoaders } from "../training/recipe.ts";
import { setup } from "./helpers.ts";
import { cifar, noteCifar } from "./test_data.ts";

await setup();
noteCifar("train_test");
const dataDir = cifar.dir ?? "";
const data = cifar.dir ? await openCifar10({ dataDir, log: () => {} }) : null!;

function config(out: string, over: Partial<TrainConfig> = {}): TrainConfig {
  return {
    ...parseTrainArgs(["--quick"]).config,
    stage: "final",
    ...NARROW,
    epochs: 2,
    batchSize: 16,
    trainLimit: 64,
    evalLimit: 32,
    out,
    ...over,
  };
}

function loaders(cfg: TrainConfig, run = 0) {
  return runLoaders(data, cfg, cfg.seed + run);
}

Deno.test(
  "the narrow final model learns: the loss falls over a few steps",
  { ignore: !cifar.dir },
  async () => {
    const cfg = config("", { batchSize: 32, trainLimit: 128 });
    const model = buildRunModel(cfg, 0);
    const opt = new AdamW(model.parameters(), { lr: 0.004, weightDecay: 0.05 });
    const { train } = loaders(cfg);
    const losses: number[] = [];
    for (let epoch = 0; epoch < 3; epoch++) {
      for (const batch of train.epoch(0)) { // the same four batches again: the loss must fall
        const loss = trainStepLoss({ model, optimizer: opt }, batch);
        losses.push(await loss.item());
        loss.dispose();
        batch.x.dispose();
        batch.y.dispose();
      }
    }
    const first = losses.slice(0, 4).reduce((a, b) => a + b) / 4,
      last = losses.slice(-4).reduce((a, b) => a + b) / 4;
    assert.ok(losses.every(Number.isFinite), `finite losses ${losses}`);
    assert.ok(last < first - 0.1, `loss fell from ${first.toFixed(3)} to ${last.toFixed(3)}`);
    model.dispose();
    opt.dispose();
  },
);

Deno.test("GPU memory in use stays flat from step to step", { ignore: !cifar.dir }, async () => {
  const cfg = config("", { trainLimit: 96 });
  const model = buildRunModel(cfg, 0);
  const opt = new AdamW(model.parameters(), { lr: 0.004, weightDecay: 0.05 });
  const { train } = loaders(cfg);
  const inUse: number[] = [];
  for (const batch of train.epoch(0)) {
    trainStep({ model, optimizer: opt }, batch);
    batch.x.dispose();
    batch.y.dispose();
    await (await import("../kernels/runtime.ts")).sync();
    inUse.push(poolStats().bytesInUse);
  }
  assert.equal(inUse.length, 6);
  // after the first step (which allocates gradients and optimizer state) and while the loader
  // prefetches a next batch, the bytes in use must not move
  const steady = inUse.slice(1, 5);
  assert.ok(steady.every((b) => b === steady[0]), `bytes in use per step: ${inUse}`);
  model.dispose();
  opt.dispose();
});

Deno.test(
  "a run writes its CSV, summary and checkpoints; resume after an interrupt gives identical results",
  { ignore: !cifar.dir },
  async () => {
    const dirA = await Deno.makeTempDir(), dirB = await Deno.makeTempDir();
    try {
      const cfgA = config(dirA), cfgB = config(dirB);
      const quiet = { log: () => {}, progress: false };
      const a = await trainRun(cfgA, { run: 0, loaders: loaders(cfgA), resume: false, ...quiet });
      assert.equal(a.complete, true);
      const csv = (await Deno.readTextFile(`${dirA}/run0.csv`)).trim().split("\n");
      assert.equal(csv[0], "epoch,loss,Train,Validation,Test,lr,seconds");
      assert.equal(csv.length, 3);
      const summary = JSON.parse(await Deno.readTextFile(`${dirA}/run0.json`));
      assert.equal(summary.complete, true);
      assert.equal(summary.epochsCompleted, 2);
      assert.equal(summary.parameters, 305690);
      assert.ok(summary.reported.accuracy >= 0 && summary.reported.accuracy <= 1);
      for (const f of ["run0.last.safetensors", "run0.best.safetensors"]) await Deno.stat(`${dirA}/${f}`);

      // interrupted after 3 steps of the first epoch (as Ctrl-C would), then resumed
      let steps = 0;
      const b1 = await trainRun(cfgB, {
        run: 0,
        loaders: loaders(cfgB),
        resume: false,
        stopRequested: () => ++steps >= 3,
        ...quiet,
      });
      assert.equal(b1.complete, false);
      const b2 = await trainRun(cfgB, { run: 0, loaders: loaders(cfgB), resume: true, ...quiet });
      assert.equal(b2.complete, true);
      const strip = (rows: typeof a.rows) => rows.map(({ seconds: _, ...r }) => r);
      assert.deepEqual(strip(b2.rows), strip(a.rows));
      const wa = await loadSafetensors(`${dirA}/run0.last.safetensors`);
      const wb = await loadSafetensors(`${dirB}/run0.last.safetensors`);
      for (const [name, t] of Object.entries(wa.tensors)) {
        assert.deepEqual(wb.tensors[name].data, t.data, `${name} differs after resume`);
      }
    } finally {
      await Deno.remove(dirA, { recursive: true });
      await Deno.remove(dirB, { recursive: true });
    }
  },
);

Deno.test("a NaN loss stops the run with a clear error and keeps the last good checkpoint", {
  ignore: !cifar.dir,
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cfg = config(dir);
    const real = loaders(cfg);
    // epoch 2's third batch is poisoned with NaN inputs
    const poisoned = {
      ...real,
      train: {
        count: real.train.count,
        batchesPerEpoch: real.train.batchesPerEpoch,
        *epoch(e: number, opts?: { startBatch?: number }) {
          for (const b of real.train.epoch(e, opts)) {
            if (e === 1 && b.index === 2) {
              b.x.dispose();
              yield { ...b, x: tensor(new Float32Array(b.size * 3072).fill(NaN), [b.size, 3, 32, 32]) };
            } else yield b;
          }
        },
      },
    };
    await assert.rejects(
      trainRun(cfg, { run: 0, loaders: poisoned, resume: false, log: () => {}, progress: false }),
      /Training diverged: the loss became NaN in epoch 2 .*end of epoch 1/,
    );
    const csv = (await Deno.readTextFile(`${dir}/run0.csv`)).trim().split("\n");
    assert.equal(csv.length, 2, "only epoch 1 was written");
    const ckpt = await loadSafetensors(`${dir}/run0.last.safetensors`);
    assert.equal(JSON.parse(ckpt.metadata.state).epoch, 1);
    for (const t of Object.values(ckpt.tensors)) {
      assert.ok(t.data.every(Number.isFinite), "checkpoint is finite");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
