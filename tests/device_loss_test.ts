// A WebGPU device lost in the middle of training (simulated with `device.destroy()`): the run stops
// with a clear message, the last checkpoint is intact, and `deno task train --resume` (a new process,
// so a new device) continues to the uninterrupted run's results. Its own file: the device of this
// test module is gone afterwards (each test module gets its own).

import assert from "node:assert/strict";
import { gpu } from "../kernels/runtime.ts";
import { openCifar10 } from "../data/cifar10.ts";
import { runLoaders } from "../training/recipe.ts";
import { parseTrainArgs } from "../experiments/config.ts";
import { type Loaders, trainRun } from "../experiments/trainer.ts";
import { loadSafetensors } from "../experiments/files.ts";
import { setup } from "./helpers.ts";
import { cifar, noteCifar } from "./test_data.ts";

await setup();
noteCifar("device_loss_test");
const dataDir = cifar.dir ?? "";
const data = cifar.dir ? await openCifar10({ dataDir, log: () => {} }) : null!;

const flags = (out: string) => [
  "--quick",
  "--epochs",
  "2",
  "--batch-size",
  "16",
  "--train-limit",
  "64",
  "--eval-limit",
  "32",
  "--data-dir",
  dataDir,
  "--out",
  out,
];

function setupRun(out: string) {
  const cfg = parseTrainArgs(flags(out)).config;
  const loaders: Loaders = runLoaders(data, cfg, cfg.seed);
  return { cfg, loaders };
}

const csvNoSeconds = async (dir: string) =>
  (await Deno.readTextFile(`${dir}/run0.csv`)).trim().split("\n").map((l) =>
    l.split(",").slice(0, -1).join(",")
  );

Deno.test("device lost mid-training: a clear message, the last checkpoint intact, --resume continues", {
  ignore: !cifar.dir,
}, async () => {
  const dirA = await Deno.makeTempDir(), dirB = await Deno.makeTempDir();
  try {
    const quiet = { log: () => {}, progress: false };
    const a = setupRun(dirA);
    assert.equal(
      (await trainRun(a.cfg, { run: 0, loaders: a.loaders, resume: false, ...quiet })).complete,
      true,
    );

    const b = setupRun(dirB);
    const train = b.loaders.train;
    const losing: Loaders = {
      ...b.loaders,
      train: {
        count: train.count,
        batchesPerEpoch: train.batchesPerEpoch,
        *epoch(e: number, opts?: { startBatch?: number }) {
          for (const batch of train.epoch(e, opts)) {
            if (e === 1 && batch.index === 2) gpu().device.destroy(); // epoch 2, third step
            yield batch;
          }
        },
      },
    };
    await assert.rejects(
      trainRun(b.cfg, { run: 0, loaders: losing, resume: false, ...quiet }),
      new RegExp(
        `^Error: WebGPU device lost \\(destroyed\\): .*: run 0 \\(final\\) stopped in epoch 2\\. ` +
          `The last checkpoint \\(end of epoch 1\\) is intact in .*run0\\.last\\.safetensors: ` +
          `continue with --resume once the GPU is available again\\.$`,
      ),
    );
    const ckpt = await loadSafetensors(`${dirB}/run0.last.safetensors`);
    assert.equal(ckpt.verified, true, "its hashes match");
    assert.equal(JSON.parse(ckpt.metadata.state).epoch, 1);

    const resume = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-write", "--allow-env", "--allow-net", "experiments/train.ts"]
        .concat(flags(dirB), "--resume"),
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(resume.stdout);
    assert.equal(resume.code, 0, new TextDecoder().decode(resume.stderr));
    assert.match(out, /resuming run 0 of final at epoch 2, step 0/);
    assert.deepEqual(await csvNoSeconds(dirB), await csvNoSeconds(dirA));
  } finally {
    await Deno.remove(dirA, { recursive: true });
    await Deno.remove(dirB, { recursive: true });
  }
});
