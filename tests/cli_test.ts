import assert from "node:assert/strict";
import { cifar, noteCifar } from "./test_data.ts";
import { parseTrainArgs, STAGES } from "../experiments/config.ts";

noteCifar("cli_test");

async function run(script: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-env", "--allow-net", script, ...args],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  });
  const r = await cmd.output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("train flags: the notebook's recipe by default, --quick preset, overrides", () => {
  const d = parseTrainArgs([]);
  assert.deepEqual(
    [
      d.config.stage,
      d.config.epochs,
      d.config.batchSize,
      d.config.lr,
      d.config.weightDecay,
      d.config.protocol,
    ],
    ["final", 100, 64, 0.004, 0.05, "notebook"],
  );
  assert.equal(d.config.widths, undefined);
  const q = parseTrainArgs(["--quick", "--epochs", "3"]);
  assert.deepEqual([q.config.epochs, q.config.trainLimit, q.config.widths], [3, 2000, [16, 32, 64, 128]]);
  assert.deepEqual(parseTrainArgs(["--stage", "all"]).stages, [...STAGES]);
  assert.equal(parseTrainArgs(["--protocol", "clean", "--runs", "3"]).runs, 3);
});

Deno.test("train flags: bad values give clear errors", () => {
  assert.throws(
    () => parseTrainArgs(["--stage", "convnext"]),
    /Unknown stage "convnext". Valid stages: base, /,
  );
  assert.throws(() => parseTrainArgs(["--widths", "16,32"]), /--widths needs four positive integers/);
  assert.throws(() => parseTrainArgs(["--epochs", "0"]), /--epochs needs an integer ≥ 1/);
  assert.throws(() => parseTrainArgs(["--protocol", "paper"]), /--protocol must be "notebook" or "clean"/);
  assert.throws(() => parseTrainArgs(["--drop-path", "1.5"]), /--drop-path must be below 1/);
  assert.throws(() => parseTrainArgs(["--bogus"]), /Unknown option '--bogus'/);
});

Deno.test("the commands answer --help and fail cleanly on bad input", async () => {
  const help = await run("experiments/train.ts", ["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.out, /--protocol NAME/);
  assert.match(help.out, /SIGTERM[^]*exit with status 130, 143 and\s+129/);
  const bad = await run("experiments/train.ts", ["--stage", "nope"]);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /train: Unknown stage "nope"/);
  const ev = await run("experiments/eval.ts", []);
  assert.equal(ev.code, 1);
  assert.match(ev.err, /--checkpoint FILE is required/);
  const missing = await run("experiments/eval.ts", ["--checkpoint", "/nonexistent/x.safetensors"]);
  assert.equal(missing.code, 1);
  assert.match(missing.err, /eval: .*No such file|eval: .*not found/i);
  assert.equal((await run("experiments/report.ts", ["--help"])).code, 0);
});

Deno.test(
  "train skips complete runs and refuses to overwrite an unfinished one",
  { ignore: !cifar.dir },
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const summary = (complete: boolean) => JSON.stringify({ stage: "final", run: 0, complete });
      await Deno.writeTextFile(`${dir}/run0.json`, summary(true));
      const data = cifar.dir!;
      const args = ["--quick", "--out", dir, "--data-dir", data];
      const skip = await run("experiments/train.ts", args);
      assert.equal(skip.code, 0, skip.err);
      assert.match(skip.out, /final run 0: already complete in .*run0\.json, skipped/);
      await Deno.writeTextFile(`${dir}/run0.json`, summary(false));
      const refuse = await run("experiments/train.ts", args);
      assert.equal(refuse.code, 1);
      assert.match(refuse.err, /unfinished run .* Pass --resume to continue it/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("train --synthetic: one epoch on random CIFAR-shaped data, said so in the log and run0.json; the compile phase and the steps report progress", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.throws(() => parseTrainArgs(["--synthetic", "--data-dir", "x"]), /--synthetic and --data-dir/);
    const args = ["--quick", "--synthetic", "--epochs", "1", "--train-limit", "64", "--eval-limit", "32"];
    const r = await run("experiments/train.ts", [...args, "--batch-size", "32", "--out", dir]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /data: synthetic \(random CIFAR-shaped images and labels from seed 0/);
    assert.doesNotMatch(r.out + r.err, /CIFAR-10: (using|downloading)/);
    // the phases before the first step say what they do (stderr is a pipe here: lines, not a redrawn bar)
    assert.match(r.err, /^compiling (\d+) kernels (?:\[[#.]+\] )?0\/\1 kernels \(0%\)/m, r.err);
    assert.match(r.err, /^compiling (\d+) kernels (?:\[[#.]+\] )?\1\/\1 kernels \(100%\)/m, r.err);
    assert.match(r.out, /^compiled \d+ kernels in \d+\.\d s$/m, r.out);
    assert.match(r.err, /^epoch 1\/1 (?:\[[#.]+\] )?2\/2 steps \(100%\)/m, r.err);
    assert.doesNotMatch(r.err, /\r/, "no redrawn bar when stderr is not a terminal");
    const summary = JSON.parse(await Deno.readTextFile(`${dir}/run0.json`));
    assert.equal(summary.data, "synthetic");
    assert.equal(summary.config.synthetic, true);
    assert.equal(summary.epochsCompleted, 1);
    assert.ok(Number.isFinite(summary.reported.accuracy));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
