// `deno task bench`: kernel and training-step throughput against the adapter's measured ceilings, and
// optionally against TensorFlow.js's WebGPU backend. Run with --help for the options.

import { parseArgs } from "node:util";
import { STAGES } from "../models/zoo.ts";
import { type BenchOptions, defaultSteps, formatReport, runBench, type Section } from "./run.ts";

const HELP = `deno task bench [options]

Measures, on the WebGPU adapter Deno finds (lavapipe on a machine without a GPU):
  * the adapter's ceilings: an FMA-bound micro-kernel (GFLOP/s), a copy kernel (GB/s), and the cost
    of a load by memory path (storage, uniform, texture, workgroup; ns per float per invocation);
  * every distinct layer of the models on its real shape: forward and each backward pass, time per
    call (median and spread of several runs after a warm-up), GFLOP/s or GB/s, % of the roofline;
    the 1×1 convolutions also as GEMMs through kernels/matmul.ts; the fused AdamW step;
  * whole training steps (forward + cross-entropy + backward + AdamW): ms/step, images/s, GPU memory,
    and the sum of the step's kernel times (per-pass timestamps) to show the overhead;
  * with --compare tfjs, TensorFlow.js's WebGPU backend on the same shapes (GEMMs, depthwise 7×7 and
    dense 3×3 convolutions, forward and both backward passes) and the speed-up ours/theirs;
  * with --compare torch, PyTorch on the CPU running the same training steps (the notebook's models
    from scripts/golden/models.py, parameter counts checked equal to ours; AdamW lr 0.004, weight
    decay 0.05; torch.set_num_threads = the cores). Each side runs alone in its own child process,
    one at a time (a fresh one per round: 2 warm-up steps, then the timed steps): per case 5 rounds
    of ours, PyTorch, ours, PyTorch… ($CONVNEXT_TORCH_ROUNDS), so both meet the same machine; min
    and median of each side, the ratio ours/theirs min to min (and of the medians), the spread, and
    per round the load average, the child's CPU time and preemptions, and this process's CPU time
    meanwhile. PyTorch's threads wait for each other in every op: on a busy machine its spread is
    large, so compare on an idle one. Needs a Python with torch: $CONVNEXT_TORCH_PYTHON, else
    /usr/bin/python3 (Debian's python3-torch), else python3 on PATH; without one the section is
    skipped with the reason (not an error).
Timing uses GPU timestamp queries when the adapter has 'timestamp-query', else wall time around a
batch of calls with one onSubmittedWorkDone.

Defaults are sized to finish in a few minutes on lavapipe: kernels at batch 8 (the real channel and
spatial sizes, fewer images), every layer of 'final' plus the other convolutions and BatchNorm of
steps 1-6, training steps of the narrow 'final' at batch 64 and of 'final' at batch 4; 3 timed runs
per kernel and 2 timed steps per model, each after a warm-up.
--full measures everything at batch 64 as the notebook trains (tens of minutes on lavapipe).

Options:
  --filter RE         only rows whose name matches the regular expression (case-insensitive),
                      e.g. "dwconv|groupNorm", "gemm", "step final"
  --compare LIST      add peers: tfjs (TensorFlow.js WebGPU, npm:@tensorflow/tfjs-backend-webgpu),
                      torch (PyTorch CPU training steps, scripts/torch_bench.py), or tfjs,torch
  --only LIST         sections to run: kernels,steps,tfjs,torch (ceilings always run)
  --json              print the report as JSON on stdout (progress goes to stderr)
  --out FILE          also write the JSON report to FILE
  --quick             a smoke run: batch 2, 'final' only, narrow step at batch 16, 2 runs per
                      kernel, 1 timed step
  --full              batch 64 everywhere; every layer of all seven steps; a step of each model
  --batch N           batch of the kernel benchmarks and the comparison (default 8; --full 64)
  --stages LIST       stages whose every layer is measured (default final; "all" for the seven)
  --extra-stages LIST stages adding only their other convolutions and BatchNorm (default: the rest)
  --steps LIST        stages whose full-size training step is timed (default final; "all": each
                      stage, about 2.5 min more at --step-batch 2 on lavapipe)
  --step-batch N      batch of those steps (default 4; --full 64; the narrow model uses 64)
  --runs N            samples per measurement after warm-up (default 3)
  --plan SPEC         force kernel variants, e.g. "conv=tiled" (see README, "Kernel plan"); default:
                      $CONVNEXT_PLAN, else the planner's choice
  --no-autotune       the adapter profile's defaults only (also CONVNEXT_AUTOTUNE=0); by default a
                      training step's competing variants are timed once and the winners cached
  -h, --help          this text

Stages: ${STAGES.join(", ")}.
A measurement that fails is reported (ERROR lines, "errors" in the JSON) and the run goes on; the
exit status is then 1.
`;

function list(s: string | undefined, fallback: string[]): string[] {
  if (s === undefined) return fallback;
  if (s === "all") return [...STAGES];
  const xs = s.split(",").map((x) => x.trim()).filter(Boolean);
  for (const x of xs) {
    if (!(STAGES as readonly string[]).includes(x)) {
      throw new Error(`unknown stage "${x}" (stages: ${STAGES.join(", ")})`);
    }
  }
  return xs;
}

function int(s: string | undefined, name: string): number | null {
  if (s === undefined) return null;
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} needs a positive integer, got "${s}"`);
  return n;
}

export function parseBenchArgs(
  args: string[],
): { opts: BenchOptions; json: boolean; out: string | null; help: boolean } {
  const { values } = parseArgs({
    args,
    options: {
      help: { type: "boolean", short: "h" },
      filter: { type: "string" },
      compare: { type: "string" },
      only: { type: "string" },
      json: { type: "boolean" },
      out: { type: "string" },
      quick: { type: "boolean" },
      full: { type: "boolean" },
      batch: { type: "string" },
      stages: { type: "string" },
      "extra-stages": { type: "string" },
      steps: { type: "string" },
      "step-batch": { type: "string" },
      runs: { type: "string" },
      plan: { type: "string" },
      "no-autotune": { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  });
  const peers = values.compare === undefined ? [] : values.compare.split(",").map((x) => x.trim());
  for (const p of peers) {
    if (p !== "tfjs" && p !== "torch") {
      throw new Error(`--compare takes "tfjs", "torch" or "tfjs,torch", got "${values.compare}"`);
    }
  }
  if (values.quick && values.full) throw new Error("--quick and --full exclude each other");
  const quick = !!values.quick, full = !!values.full;
  const sections: Section[] = values.only
    ? values.only.split(",").map((s) => {
      if (!["kernels", "steps", "tfjs", "torch"].includes(s)) {
        throw new Error(`--only: unknown section "${s}"`);
      }
      return s as Section;
    })
    : ["kernels", "steps"];
  for (const p of peers) if (!sections.includes(p as Section)) sections.push(p as Section);
  const batch = int(values.batch, "batch") ?? (quick ? 2 : full ? 64 : 8);
  const stages = list(values.stages, full ? [...STAGES] : ["final"]);
  const extraStages = list(values["extra-stages"], quick || full ? [] : STAGES.filter((s) => s !== "final"));
  const stepBatch = int(values["step-batch"], "step-batch");
  const stepStages = list(values.steps, full ? [...STAGES] : quick ? [] : ["final"]);
  const steps = quick
    ? defaultSteps(false, stepBatch ?? 16, []).map((s) => ({ ...s, batch: stepBatch ?? 16 }))
    : defaultSteps(full, stepBatch, stepStages);
  const runs = int(values.runs, "runs") ?? (quick ? 2 : 3);
  const notes: string[] = [];
  if (!full) {
    notes.push(
      `kernels at batch ${batch} instead of the notebook's 64 (same channels and spatial sizes); --full or --batch 64 for the real size`,
    );
    const small = steps.filter((s) => !s.model && s.batch < 64);
    if (small.length) {
      notes.push(
        `training steps of ${small.map((s) => s.name).join(", ")} at batch ${
          small[0].batch
        } (--full or --step-batch 64 for the real size)`,
      );
    }
  }
  return {
    opts: {
      sections,
      batch,
      stages,
      extraStages,
      steps,
      adamwStage: "final",
      runs,
      minSampleMs: 20,
      stepRuns: quick ? 1 : 2,
      filter: values.filter,
      notes,
      kernelSettings: { plan: values.plan, autotune: values["no-autotune"] ? false : undefined },
    },
    json: !!values.json,
    out: values.out ?? null,
    help: !!values.help,
  };
}

if (import.meta.main) {
  let parsed;
  try {
    parsed = parseBenchArgs(Deno.args);
  } catch (e) {
    console.error(`bench: ${e instanceof Error ? e.message : e}\n\n${HELP}`);
    Deno.exit(2);
  }
  if (parsed.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const { opts, json, out } = parsed;
  opts.log = (line) => console.error(line);
  const report = await runBench(opts);
  if (out) await Deno.writeTextFile(out, JSON.stringify(report, null, 2) + "\n");
  if (json) console.log(JSON.stringify(report, null, 2));
  else console.log("\n" + formatReport(report));
  Deno.exit(report.errors.length ? 1 : 0);
}
