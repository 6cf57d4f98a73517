// `deno task train`: the CLI around `trainRun` (see --help). Ctrl-C, SIGTERM and SIGHUP stop a run
// after its current step with a checkpoint (experiments/signals.ts).

import { openCifar10 } from "../data/cifar10.ts";
import { syntheticCifar10 } from "../data/synthetic.ts";
import { runLoaders } from "../training/recipe.ts";
import { parseTrainArgs, type Stage, TRAIN_HELP, type TrainCli, type TrainConfig } from "./config.ts";
import { reportedAccuracy, runPaths, type RunSummary } from "./results.ts";
import { trainRun } from "./trainer.ts";
import { formatDuration } from "./progress.ts";
import { configDifferences, previousCheckpoint } from "./checkpoint.ts";
import { listenForStop } from "./signals.ts";
import { initEngine } from "./host.ts";
import { planOverride } from "../kernels/planner.ts";

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

function stageConfig(cli: TrainCli, stage: Stage): TrainConfig {
  const cfg: TrainConfig = { ...cli.config, stage, out: cli.config.out || `results/${stage}` };
  if (cli.stages.length > 1 && cli.config.out) cfg.out = `${cli.config.out}/${stage}`;
  return cfg;
}

/**
 * Checks every run the command would touch before any trains: a finished run asked to go on with
 * other flags, or an unfinished one without --resume, is an error saying what to do. Returns the
 * runs already complete with the same flags (to skip).
 */
async function checkRuns(cli: TrainCli): Promise<Set<string>> {
  const skip = new Set<string>();
  for (const stage of cli.stages) {
    const cfg = stageConfig(cli, stage);
    for (const run of cli.runIndices) {
      const paths = runPaths(cfg.out, run);
      const summary = await readSummary(paths.summary);
      if (summary?.complete) {
        const diff = summary.config ? configDifferences(summary.config, cfg) : [];
        if (diff.length) {
          throw new Error(
            `${stage} run ${run} in ${cfg.out} is complete, trained with ${diff.join(", ")}. ` +
              `A finished run is not retrained or extended: to train with these flags, pass another --out ` +
              `(or another run index, --run K, which also changes the seed); to keep it, repeat its flags.`,
          );
        }
        skip.add(paths.summary);
      } else if (
        !cli.resume &&
        (summary || await exists(paths.checkpoint) || await exists(previousCheckpoint(paths.checkpoint)))
      ) {
        throw new Error(
          `${stage} run ${run} has an unfinished run in ${cfg.out} (${paths.checkpoint}). ` +
            `Pass --resume to continue it, or another --out (or delete those files) to start over.`,
        );
      }
    }
  }
  return skip;
}

async function main(args: string[]): Promise<number> {
  const cli = parseTrainArgs(args);
  if (cli.help) {
    console.log(TRAIN_HELP);
    return 0;
  }
  const stop = listenForStop();
  const skip = await checkRuns(cli);

  const { ctx, autotuneCache } = await initEngine(cli.kernels);
  console.log(`WebGPU adapter: ${ctx.adapterName}${ctx.isFallbackAdapter ? " (software)" : ""}`);
  console.log(
    `kernels: ${planOverride() ? `plan override "${planOverride()}", ` : ""}autotune ${
      autotuneCache ? `on (winners cached in ${autotuneCache})` : "off"
    }`,
  );
  if (ctx.isFallbackAdapter && !cli.config.widths && cli.config.epochs >= 10) {
    console.log(
      "note: this is the full-size recipe on a software adapter, which runs WGSL on the CPU: expect days " +
        "per run. `--quick` trains a narrow model in minutes; the full study is meant for a real GPU.",
    );
  }
  const data = cli.config.synthetic
    ? syntheticCifar10(cli.config.seed)
    : await openCifar10({ dataDir: cli.config.dataDir, log: (m) => console.log(m) });
  if (cli.config.synthetic) {
    console.log(
      `data: synthetic (random CIFAR-shaped images and labels from seed ${cli.config.seed}, not CIFAR-10: ` +
        `accuracies mean nothing)`,
    );
  }

  for (const stage of cli.stages) {
    const cfg = stageConfig(cli, stage);
    await Deno.mkdir(cfg.out, { recursive: true });
    for (const run of cli.runIndices) {
      const paths = runPaths(cfg.out, run);
      if (skip.has(paths.summary)) {
        console.log(`${stage} run ${run}: already complete in ${paths.summary}, skipped`);
        continue;
      }
      if (stop.signal) return stop.status; // asked to stop between runs: start no other
      const seed = cfg.seed + run;
      const loaders = runLoaders(data, cfg, seed);
      console.log(
        `${stage} run ${run} (seed ${seed}, protocol ${cfg.protocol}): ${loaders.train.count} training, ` +
          `${loaders.validation.count} validation, ${loaders.test.count} test images, ${cfg.epochs} epochs`,
      );
      const t0 = performance.now();
      const r = await trainRun(cfg, {
        run,
        loaders,
        resume: cli.resume,
        stopRequested: () => stop.signal !== null,
      });
      if (!r.complete) return stop.status;
      // no epoch left to train (a resumed run whose summary was not written): the same rule from its rows
      const rep = r.summary?.reported ?? reportedAccuracy(r.rows, cfg.protocol);
      console.log(
        `${stage} run ${run} done in ${formatDuration((performance.now() - t0) / 1000)}: ` +
          `${rep.rule} ${(rep.accuracy * 100).toFixed(2)}% (epoch ${rep.epoch}); ` +
          `results in ${paths.csv} and ${paths.summary}`,
      );
    }
  }
  stop.remove();
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
