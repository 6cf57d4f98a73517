// Reliability of training runs: damaged checkpoints (a flipped bit, a NaN) are refused with the file
// and tensor named, resume falls back to the previous checkpoint and still reproduces an uninterrupted
// run, `deno task eval` verifies what it loads, SIGTERM checkpoints and resumes identically, a second
// signal quits at once, and a finished run asked to go on with other flags says what differs.

import assert from "node:assert/strict";
import { openCifar10 } from "../data/cifar10.ts";
import { runLoaders } from "../training/recipe.ts";
import { parseTrainArgs, type TrainConfig } from "../experiments/config.ts";
import { trainRun } from "../experiments/trainer.ts";
import { loadSafetensors } from "../experiments/files.ts";
import { decodeSafetensors, encodeSafetensors, sealSafetensors } from "../nn/safetensors.ts";
import { setup } from "./helpers.ts";
import { cifar, noteCifar } from "./test_data.ts";

await setup();
noteCifar("reliability_test");
const dataDir = cifar.dir ?? "";
const data = cifar.dir ? await openCifar10({ dataDir, log: () => {} }) : null!;
const root = new URL("..", import.meta.url).pathname;

/** The tiny run every test trains: 2 epochs of 4 steps (10 with `steps10`), 32 evaluation images. */
function flags(out: string, steps10 = false): string[] {
  return [
    "--quick",
    "--epochs",
    "2",
    "--batch-size",
    "16",
    "--train-limit",
    steps10 ? "160" : "64",
    "--eval-limit",
    "32",
    "--progress-every",
    "1",
    "--data-dir",
    dataDir,
    "--out",
    out,
  ];
}

/** The configuration and loaders `deno task train` builds for these flags. */
function setupRun(args: string[]) {
  const cfg: TrainConfig = parseTrainArgs(args).config;
  const loaders = runLoaders(data, cfg, cfg.seed);
  return { cfg, loaders };
}

const strip = (rows: { seconds: number }[]) => rows.map(({ seconds: _, ...r }) => r);
/** A run's CSV without its `seconds` column. */
async function csvNoSeconds(dir: string): Promise<string[]> {
  return (await Deno.readTextFile(`${dir}/run0.csv`)).trim().split("\n").map((l) =>
    l.split(",").slice(0, -1).join(",")
  );
}

/** The byte offset of tensor `name`'s data in safetensors `bytes`. */
function dataOffset(bytes: Uint8Array, name: string): number {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  return 8 + n + header[name].data_offsets[0];
}

async function flipBit(path: string, tensor: string, byte = 3): Promise<void> {
  const bytes = await Deno.readFile(path);
  bytes[dataOffset(bytes, tensor) + byte] ^= 0x04;
  await Deno.writeFile(path, bytes);
}

const WEIGHT = "encoder.stages.2.1.block.0.weight";

Deno.test(
  "a damaged last checkpoint: resume says so, continues from the previous one, and matches an uninterrupted run",
  { ignore: !cifar.dir },
  async () => {
    const dirA = await Deno.makeTempDir(), dirB = await Deno.makeTempDir();
    try {
      const quiet = { log: () => {}, progress: false };
      const a = setupRun(flags(dirA));
      const ref = await trainRun(a.cfg, { run: 0, loaders: a.loaders, resume: false, ...quiet });
      assert.equal(ref.complete, true);

      // stopped at step 2 of epoch 2: the last checkpoint is mid-epoch, the previous one ends epoch 1
      const b = setupRun(flags(dirB));
      let calls = 0;
      const stopped = await trainRun(b.cfg, {
        run: 0,
        loaders: b.loaders,
        resume: false,
        stopRequested: () => ++calls >= 7, // 4 steps + 1 end-of-epoch check, then 2 steps
        ...quiet,
      });
      assert.equal(stopped.complete, false);
      const last = `${dirB}/run0.last.safetensors`, prev = `${dirB}/run0.prev.safetensors`;
      const state = async (p: string) => JSON.parse((await loadSafetensors(p)).metadata.state);
      assert.deepEqual([(await state(last)).epoch, (await state(last)).batch], [1, 2]);
      assert.deepEqual([(await state(prev)).epoch, (await state(prev)).batch], [1, 0]);

      await flipBit(last, WEIGHT);
      const stale = `${dirB}/.run0.last.safetensors.99999.deadbeef.tmp`; // as a write killed midway leaves it
      await Deno.writeTextFile(stale, "half a checkpoint");
      const lines: string[] = [];
      const resumed = await trainRun(b.cfg, {
        run: 0,
        loaders: b.loaders,
        resume: true,
        log: (l) => lines.push(l),
        progress: false,
      });
      const text = lines.join("\n");
      assert.match(
        text,
        new RegExp(`run0\\.last\\.safetensors: tensor "${WEIGHT}" does not match the SHA-256`),
      );
      assert.match(text, /Resuming from the previous checkpoint .*run0\.prev\.safetensors instead/);
      assert.match(text, /resuming run 0 of final at epoch 2, step 0/);
      assert.match(text, /removed 1 temporary file\(s\) left by an interrupted write/);
      await assert.rejects(() => Deno.stat(stale), Deno.errors.NotFound);
      assert.equal(resumed.complete, true);
      assert.deepEqual(strip(resumed.rows), strip(ref.rows));
      assert.deepEqual(await csvNoSeconds(dirB), await csvNoSeconds(dirA));
      const [wa, wb] = [await loadSafetensors(`${dirA}/run0.last.safetensors`), await loadSafetensors(last)];
      for (const [name, t] of Object.entries(wa.tensors)) {
        assert.deepEqual(wb.tensors[name].data, t.data, name);
      }
      await Deno.stat(`${last}.damaged`); // kept for inspection
    } finally {
      await Deno.remove(dirA, { recursive: true });
      await Deno.remove(dirB, { recursive: true });
    }
  },
);

async function run(script: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-env", "--allow-net", script, ...args],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test(
  "a NaN or a flipped bit in the only checkpoint is refused by --resume and by eval, naming file and tensor",
  { ignore: !cifar.dir },
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const { cfg, loaders } = setupRun(flags(dir));
      let calls = 0; // stop after epoch 1: one checkpoint, no previous one
      const r = await trainRun(cfg, {
        run: 0,
        loaders,
        resume: false,
        stopRequested: () => ++calls >= 5,
        log: () => {},
        progress: false,
      });
      assert.equal(r.complete, false);
      const last = `${dir}/run0.last.safetensors`;
      const good = await Deno.readFile(last);
      const attempt = () => trainRun(cfg, { run: 0, loaders, resume: true, log: () => {}, progress: false });

      // a NaN in a weight, in a file whose hashes match (as an unguarded writer would leave it)
      const file = decodeSafetensors(good);
      file.tensors[WEIGHT].data[11] = NaN;
      await Deno.writeFile(last, await sealSafetensors(file.tensors, file.metadata));
      await assert.rejects(
        attempt,
        new RegExp(
          `run0\\.last\\.safetensors: tensor "${WEIGHT}" holds NaN at index 11 of \\d+: weights and optimizer ` +
            `state must be finite[^]*There is no earlier checkpoint`,
        ),
      );
      const evNaN = await run("experiments/eval.ts", ["--checkpoint", last, "--data-dir", dataDir]);
      assert.equal(evNaN.code, 1);
      assert.match(evNaN.err, new RegExp(`eval: .*run0\\.last\\.safetensors: tensor "${WEIGHT}" holds NaN`));

      // one flipped bit in an optimizer moment
      await Deno.writeFile(last, good);
      await flipBit(last, "optimizer.3.exp_avg_sq", 2);
      await assert.rejects(attempt, /tensor "optimizer\.3\.exp_avg_sq" does not match the SHA-256 recorded/);
      const evBit = await run("experiments/eval.ts", ["--checkpoint", last, "--data-dir", dataDir]);
      assert.equal(evBit.code, 1);
      assert.match(evBit.err, /eval: .*tensor "optimizer\.3\.exp_avg_sq" does not match the SHA-256/);

      // the same checkpoint without hashes (as PyTorch writes files) is evaluated, with a note
      const plain = decodeSafetensors(good);
      const { sha256: _, ...meta } = plain.metadata;
      await Deno.writeFile(last, encodeSafetensors(plain.tensors, meta));
      const evPlain = await run("experiments/eval.ts", [
        "--checkpoint",
        last,
        "--data-dir",
        dataDir,
        "--eval-limit",
        "32",
      ]);
      assert.equal(evPlain.code, 0, evPlain.err);
      assert.match(evPlain.err, /note: .*run0\.last\.safetensors has no SHA-256 .* could not be verified/);
      assert.match(evPlain.out, /test accuracy \d+\.\d+% on 32 images/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

/** Starts `deno task train`, calls `onLine` with each stderr line until it returns true. */
function spawnTrain(args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-net",
      "experiments/train.ts",
      ...args,
    ],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const dec = new TextDecoder();
  let err = "", out = "";
  const outDone = (async () => {
    for await (const c of child.stdout) out += dec.decode(c, { stream: true });
  })();
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  const errDone = (async () => {
    for await (const c of child.stderr) {
      err += dec.decode(c, { stream: true });
      for (const w of waiters.splice(0)) (w.re.test(err) ? w.resolve : () => waiters.push(w))();
    }
    for (const w of waiters) w.resolve(); // the process ended first: the assertions below report it
  })();
  return {
    child,
    /** Resolves once stderr matches `re`. */
    waitFor: (re: RegExp) => new Promise<void>((resolve) => waiters.push({ re, resolve })),
    async finish() {
      const { code } = await child.status;
      await Promise.all([outDone, errDone]);
      return { code, out, err };
    },
  };
}

Deno.test("SIGTERM: the run checkpoints and exits with 143, --resume gives the uninterrupted run's CSV", {
  ignore: !cifar.dir,
}, async () => {
  const dirA = await Deno.makeTempDir(), dirB = await Deno.makeTempDir(), dirC = await Deno.makeTempDir();
  try {
    const ref = await run("experiments/train.ts", flags(dirA, true));
    assert.equal(ref.code, 0, ref.err);

    const t = spawnTrain(flags(dirB, true));
    await t.waitFor(/epoch 1\/2 \[.*\] 1\/10 steps/); // the first step is done
    t.child.kill("SIGTERM");
    const stopped = await t.finish();
    assert.equal(stopped.code, 143, stopped.err);
    assert.match(stopped.err, /SIGTERM: finishing the current step and writing a checkpoint/);
    assert.match(
      stopped.out,
      /stopped at epoch 1, step \d+: checkpoint written to .*run0\.last\.safetensors/,
    );
    const resumed = await run("experiments/train.ts", [...flags(dirB, true), "--resume"]);
    assert.equal(resumed.code, 0, resumed.err);
    assert.match(resumed.out, /resuming run 0 of final at epoch 1, step [1-9]/);
    assert.deepEqual(await csvNoSeconds(dirB), await csvNoSeconds(dirA));
    assert.equal(JSON.parse(await Deno.readTextFile(`${dirB}/run0.json`)).complete, true);

    // a second signal quits at once, without a checkpoint
    const q = spawnTrain(flags(dirC, true));
    await q.waitFor(/1\/10 steps/);
    q.child.kill("SIGTERM");
    q.child.kill("SIGHUP");
    const quit = await q.finish();
    assert.ok([129, 143].includes(quit.code), `exit status ${quit.code}: ${quit.err}`);
    assert.match(quit.err, /a second stop signal, quitting now without a checkpoint/);
    await assert.rejects(() => Deno.stat(`${dirC}/run0.last.safetensors`), Deno.errors.NotFound);

    // the finished run asked to go on with other flags says what differs; the same flags skip it
    const more = await run("experiments/train.ts", [...flags(dirA, true), "--epochs", "3", "--resume"]);
    assert.equal(more.code, 1);
    assert.match(
      more.err,
      /train: final run 0 in .* is complete, trained with epochs = 2 \(this command asks for 3\)\. .*another --out/,
    );
    const same = await run("experiments/train.ts", [...flags(dirA, true), "--resume"]);
    assert.equal(same.code, 0, same.err);
    assert.match(same.out, /final run 0: already complete in .*run0\.json, skipped/);
  } finally {
    for (const d of [dirA, dirB, dirC]) await Deno.remove(d, { recursive: true });
  }
});
