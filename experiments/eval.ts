// `deno task eval --checkpoint FILE`: test accuracy (overall and per class) of a saved checkpoint.

import { initGPU } from "./host.ts";
import { parseArgs } from "node:util";
import { openCifar10 } from "../data/cifar10.ts";
import { CIFAR10_CLASSES } from "../data/cifar10.ts";
import { CifarLoader, makeSplits } from "../data/loader.ts";
import { checkpointConfig, loadCheckpointModel, readCheckpoint } from "./checkpoint.ts";
import { buildRunModel } from "../training/recipe.ts";
import { evaluateAccuracy } from "../training/evaluate.ts";
import { GpuMetrics } from "../training/metrics.ts";
import { collectPipelines, compilePipelines } from "../kernels/runtime.ts";
import { meta, noGrad } from "../autograd/tensor.ts";
import { onMeta } from "../nn/module.ts";
import type { TrainConfig } from "./config.ts";
import { Phase } from "./progress.ts";

const HELP =
  `deno task eval --checkpoint FILE [--data-dir DIR] [--eval-limit N] [--batch-size N] [--train-mode] [--json]

Evaluates a checkpoint written by \`deno task train\` (run*.last.safetensors or run*.best.safetensors)
on the CIFAR-10 test set: overall and per-class accuracy. The model is rebuilt from the configuration
stored in the checkpoint. By default it runs in eval mode (BatchNorm running statistics);
--train-mode uses batch statistics as the notebook's evaluation does.

The checkpoint is verified first: the SHA-256 hashes stored in it must match (a file changed on
disk is refused, naming the tensor) and every value must be finite. A file without hashes (e.g.
written by PyTorch) is evaluated with a note that it could not be verified.
`;

/**
 * Compiles the kernels of the evaluation forward (listed by a dry run on a model built on meta) together,
 * behind a phase "compiling N kernels k/N", before the first batch; says nothing when all are cached.
 */
async function compileEvaluation(cfg: TrainConfig, batchSize: number, mode: "train" | "eval"): Promise<void> {
  const model = onMeta(() => buildRunModel(cfg, cfg.seed));
  if (mode === "train") model.train();
  else model.eval();
  const x = () => meta([batchSize, model.config.inChannels, 32, 32]);
  const requests = collectPipelines(() => noGrad(() => void model.forward(x())));
  let phase: Phase | null = null;
  await compilePipelines(requests, (done, total) => {
    if (!phase && total > 0) phase = new Phase(`compiling ${total} kernels`, total, { unit: "kernels" });
    phase?.update(done);
  });
  const c = phase as Phase | null;
  c?.end(`compiled ${c.total} kernels in ${c.seconds.toFixed(1)} s`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      checkpoint: { type: "string" },
      "data-dir": { type: "string" },
      "eval-limit": { type: "string" },
      "batch-size": { type: "string" },
      "train-mode": { type: "boolean" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return console.log(HELP);
  if (!values.checkpoint) throw new Error("--checkpoint FILE is required (see --help)");
  const file = await readCheckpoint(values.checkpoint, (m) => console.error(m));
  const cfg = checkpointConfig(file, values.checkpoint);
  await initGPU();
  const data = await openCifar10({ dataDir: values["data-dir"], log: (m) => console.error(m) });
  const limit = values["eval-limit"] ? Number(values["eval-limit"]) : undefined;
  const split = makeSplits(data, { testLimit: limit }).test;
  const batchSize = Number(values["batch-size"] ?? 100);
  const loader = new CifarLoader(split, { batchSize });
  await compileEvaluation(cfg, batchSize, values["train-mode"] ? "train" : "eval");
  const model = buildRunModel(cfg, cfg.seed);
  loadCheckpointModel(file, model, values.checkpoint);
  if (values["train-mode"]) model.train();
  else model.eval();
  const correct = new Array(10).fill(0), total = new Array(10).fill(0);
  const metrics = new GpuMetrics();
  // the accuracy is counted on the GPU (the trainer's evaluation); the predictions give the per-class table
  const phase = new Phase("evaluating", loader.count, { unit: "images", quietMs: 1000 });
  const { correct: k, images: n } = await evaluateAccuracy(model, loader, metrics, {
    onBatch: async (batch, probs) => {
      const out = await probs.toArray();
      const classes = probs.shape[1];
      batch.labels.forEach((label, i) => {
        let best = 0;
        for (let c = 1; c < classes; c++) if (out[i * classes + c] > out[i * classes + best]) best = c;
        total[label]++;
        if (best === label) correct[label]++;
      });
      phase.tick(batch.size);
    },
  });
  phase.end();
  metrics.dispose();
  const perClass = Object.fromEntries(
    CIFAR10_CLASSES.map((c, i) => [c, total[i] ? correct[i] / total[i] : NaN]),
  );
  if (values.json) {
    console.log(
      JSON.stringify({
        checkpoint: values.checkpoint,
        stage: cfg.stage,
        images: n,
        accuracy: k / n,
        perClass,
      }),
    );
    return;
  }
  console.log(
    `${values.checkpoint} (${cfg.stage}): test accuracy ${(100 * k / n).toFixed(2)}% on ${n} images`,
  );
  for (const [c, a] of Object.entries(perClass)) console.log(`  ${c.padEnd(10)} ${(100 * a).toFixed(2)}%`);
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`eval: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
