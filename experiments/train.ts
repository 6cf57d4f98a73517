// `deno task train`: the CLI around `trainRun` (see --help).

import { initGPU } from "../kernels/runtime.ts";
import { makeLoaders } from "../data/loader.ts";
import { openCifar10 } from "../data/cifar10.ts";
import { parseTrainArgs, TRAIN_HELP, type TrainConfig } from "./config.ts";
import { runPaths, type RunSummary } from "./results.ts";
import { trainRun } from "./trainer.ts";
import { formatDuration } from "./progress.ts";

async function readSummary(path: string): Promise<RunSummary | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as RunSummary;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

async function main(args: string[]): Promise<number> {
  const cli = parseTrainArgs(args);
  if (cli.help) {
    console.log(TRAIN_HELP);
    return 0;
  }
  let stop = false;
  const onSigint = () => {
    if (stop) Deno.exit(130); // a second Ctrl-C quits at once
    stop = true;
    console.error("\nCtrl-C: finishing the current step and writing a checkpoint (Ctrl-C again to quit now)");
  };
  Deno.addSignalListener("SIGINT", onSigint);

  const ctx = await initGPU();
  console.log(`WebGPU adapter: ${ctx.adapterName}${ctx.isFallbackAdapter ? " (software)" : ""}`);
  if (ctx.isFallbackAdapter && !cli.config.widths && cli.config.epochs >= 10) {
    console.log(
      "note: this is the full-size recipe on a software adapter, which runs WGSL on the CPU: expect days " +
        "per run. `--quick` trains a narrow model in minutes; the full study is meant for a real GPU.",
    );
  }
  const data = await openCifar10({ dataDir: cli.config.dataDir, log: (m) => console.log(m) });

  for (const stage of cli.stages) {
    const cfg: TrainConfig = { ...cli.config, stage, out: cli.config.out || `results/${stage}` };
    if (cli.stages.length > 1 && cli.config.out) cfg.out = `${cli.config.out}/${stage}`;
    await Deno.mkdir(cfg.out, { recursive: true });
    for (const run of cli.runIndices) {
      const paths = runPaths(cfg.out, run);
      const summary = await readSummary(paths.summary);
      if (summary?.complete) {
        console.log(`${stage} run ${run}: already complete in ${paths.summary}, skipped`);
        continue;
      }
      if (!cli.resume && (summary || await exists(paths.checkpoint))) {
        throw new Error(
          `${stage} run ${run} has an unfinished run in ${cfg.out} (${paths.checkpoint}). ` +
            `Pass --resume to continue it, or another --out (or delete those files) to start over.`,
        );
      }
      const seed = cfg.seed + run;
      const loaders = makeLoaders(data, {
        batchSize: cfg.batchSize,
        seed,
        trainLimit: cfg.trainLimit || undefined,
        evalLimit: cfg.evalLimit || undefined,
        validationAugment: cfg.protocol === "notebook",
      });
      console.log(
        `${stage} run ${run} (seed ${seed}, protocol ${cfg.protocol}): ${loaders.train.count} training, ` +
          `${loaders.validation.count} validation, ${loaders.test.count} test images, ${cfg.epochs} epochs`,
      );
      const t0 = performance.now();
      const r = await trainRun(cfg, { run, loaders, resume: cli.resume, stopRequested: () => stop });
      if (!r.complete) return 130;
      const s = r.summary;
      console.log(
        `${stage} run ${run} done in ${formatDuration((performance.now() - t0) / 1000)}: ` +
          `${s.reported.rule} ${(s.reported.accuracy * 100).toFixed(2)}% (epoch ${s.reported.epoch}); ` +
          `results in ${paths.csv} and ${paths.summary}`,
      );
    }
  }
  Deno.removeSignalListener("SIGINT", onSigint);
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`train: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
