// The benchmark driver behind `deno task bench` (bench/main.ts is its command line): settings, the
// report structure (what `--json` prints) and the terminal tables.

import { compilePipelines, gpu } from "../kernels/runtime.ts";
import { stepPipelines } from "../models/plan.ts";
import { Phase, Watchdog } from "../experiments/progress.ts";
import { planOverride } from "../kernels/planner.ts";
import { initEngine, type KernelSettings } from "../experiments/host.ts";
import { type Ceilings, measureCeilings } from "./ceilings.ts";
import { benchKernels, isTimed, type KernelRow, type TimedRow, validationText } from "./kernels.ts";
import { benchStep, NARROW, type StepCase, type StepRow } from "./steps.ts";
import type { CompareRow, TfjsInfo } from "./tfjs.ts";
import { compareTorch, formatTorchSection, type TorchSection } from "./torch.ts";
import type { MeasureOptions } from "./timing.ts";
import type { ModelOptions } from "../models/zoo.ts";

export type Section = "kernels" | "steps" | "tfjs" | "torch";

export interface BenchOptions {
  sections: Section[];
  /** Batch of the kernel benchmarks and the TensorFlow.js comparison. */
  batch: number;
  /** Stages whose every distinct layer is measured. */
  stages: string[];
  /** Stages contributing only their other convolutions and BatchNorm. */
  extraStages: string[];
  /** Whole training steps to time. */
  steps: StepCase[];
  /** Stage whose parameters the fused AdamW benchmark updates (null: none). */
  adamwStage: string | null;
  /** Samples per kernel measurement (after warm-up). */
  runs: number;
  /** Minimum duration of one sample (ms). */
  minSampleMs: number;
  /** Timed training steps per case (after one warm-up step). */
  stepRuns: number;
  /** Case-insensitive regular expression on row names. */
  filter?: string;
  /** Model overrides for the kernel cases (the test uses the narrow widths). */
  model?: ModelOptions;
  /** Ceilings measurement size (the test shrinks it). */
  ceiling?: { fmaInvocations?: number; copyMiB?: number };
  /** Lines of progress (stderr in the CLI). */
  log?: (line: string) => void;
  /** Notes printed with the report (e.g. what the defaults reduced). */
  notes?: string[];
  /** Plan override and autotune switch. */
  kernelSettings?: KernelSettings;
}

export interface BenchReport {
  date: string;
  adapter: { name: string; fallback: boolean; timestampQuery: boolean };
  deno: string;
  settings: Omit<BenchOptions, "log">;
  ceilings: { fmaGflops: number; copyGBs: number; ridge: number; detail: Ceilings["detail"] };
  kernels: KernelRow[];
  steps: StepRow[];
  tfjs: { info: TfjsInfo | null; rows: CompareRow[]; error: string | null } | null;
  /** PyTorch CPU on the same training steps (`--compare torch`): rounds of child processes, ours and
   * theirs alternately, one alive at a time (bench/torch.ts). */
  torch: TorchSection | null;
  /** Issue targets, evaluated on the rows above. */
  targets: { name: string; value: number | null; goal: string; met: boolean | null; detail: string }[];
  notes: string[];
  /** Measurements that failed (the run went on without them). */
  errors: string[];
  seconds: number;
}

function filterFn(pattern?: string): ((s: string) => boolean) | undefined {
  if (!pattern) return undefined;
  const re = new RegExp(pattern, "i");
  return (s) => re.test(s);
}

/** The bench's log: a line; `touch` when something else was written; `progress` writes a phase's text. */
type Log = ((line: string) => void) & { touch?: () => void; progress?: (text: string) => void };

/**
 * Compiles the kernels of a training step of `c` (a dry run lists them) together, behind a phase
 * "compiling N kernels k/N", before its warm-up step would compile them one by one in silence.
 */
async function compileStep(c: StepCase, log: Log): Promise<void> {
  const requests = stepPipelines(c.stage, { seed: 1, ...c.model }, c.batch);
  let phase: Phase | null = null;
  await compilePipelines(requests, (done, total) => {
    if (!phase && total > 0) {
      phase = new Phase(`  ${c.name} batch ${c.batch}: compiling ${total} kernels`, total, {
        unit: "kernels",
        log,
        quiet: !log.progress,
        tty: Deno.stderr.isTerminal(),
        write: (text) => {
          log.touch?.();
          log.progress?.(text);
        },
      });
    }
    phase?.update(done);
  });
  const p = phase as Phase | null;
  p?.end(`  ${c.name} batch ${c.batch}: compiled ${p.total} kernels in ${p.seconds.toFixed(1)} s`);
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  // every section logs a line per measurement; when one takes long (compiling, a large kernel at
  // --full), the watchdog says which section is still working every 5 s
  let section = "starting";
  const watchdog = o.log ? new Watchdog(() => `bench: ${section}`, { log: o.log }) : null;
  const enc = new TextEncoder();
  const log: Log = Object.assign((line: string) => {
    watchdog?.touch();
    o.log?.(line);
  }, {
    touch: () => watchdog?.touch(),
    progress: o.log ? (text: string) => void Deno.stderr.writeSync(enc.encode(text)) : undefined,
  });
  try {
    return await bench(o, (s) => section = s, log);
  } finally {
    watchdog?.stop();
  }
}

async function bench(o: BenchOptions, setSection: (s: string) => void, log: Log): Promise<BenchReport> {
  const t0 = performance.now();
  const { autotuneCache } = await initEngine(o.kernelSettings);
  const ctx = gpu();
  const section = (name: string) => {
    setSection(name);
    log(`${name} ...`);
  };
  const timing: MeasureOptions = { runs: o.runs, minSampleMs: o.minSampleMs, warmup: 1 };
  const filter = filterFn(o.filter);
  const errors: string[] = [];
  log(
    `adapter: ${ctx.adapterName}${ctx.isFallbackAdapter ? " (fallback)" : ""}; timing by ${
      ctx.features.timestampQuery ? "GPU timestamp queries" : "wall clock + onSubmittedWorkDone"
    }`,
  );
  log(
    `kernel plan: ${planOverride() ? `override "${planOverride()}"` : "planner"}, autotune ${
      autotuneCache ? `on (cache ${autotuneCache})` : "off"
    }`,
  );
  section("ceilings");
  const c = await measureCeilings({ ...o.ceiling, timing: { runs: o.runs } });
  log(`  FMA peak ${c.fmaGflops.toFixed(1)} GFLOP/s, copy ${c.copyGBs.toFixed(2)} GB/s`);

  let kernels: KernelRow[] = [];
  if (o.sections.includes("kernels")) {
    section(`kernels (batch ${o.batch})`);
    kernels = await benchKernels(c, {
      batch: o.batch,
      stages: o.stages,
      extraStages: o.extraStages,
      filter,
      timing,
      adamwStage: o.adamwStage,
      model: o.model,
      errors,
      log,
    });
  }
  const steps: StepRow[] = [];
  if (o.sections.includes("steps")) {
    section("training steps");
    for (const s of o.steps) {
      if (filter && !filter(`step ${s.name}`) && !filter(s.name)) continue;
      try {
        await compileStep(s, log);
        steps.push(await benchStep(s, { warmup: 1, runs: o.stepRuns, log }));
      } catch (e) {
        const msg = `step ${s.name}: ${e instanceof Error ? e.message : e}`;
        errors.push(msg);
        log(`  ERROR ${msg}`);
      }
    }
  }
  let torch: TorchSection | null = null;
  if (o.sections.includes("torch")) {
    // after our steps have finished (awaited above); each side in its own child processes, one at a time
    const cases = o.steps.filter((s) => !filter || filter(`step ${s.name}`) || filter(s.name));
    section(`PyTorch training steps (${cases.length} cases, ${navigator.hardwareConcurrency} threads)`);
    const ours = o.sections.includes("steps");
    torch = await compareTorch(cases, { runs: o.stepRuns, ours, kernelSettings: o.kernelSettings, log });
    if (torch.skipped) log(`  PyTorch skipped: ${torch.skipped}`);
    if (torch.error) errors.push(`PyTorch: ${torch.error}`);
    for (const r of torch.rows) if (r.error) errors.push(`PyTorch step ${r.name}: ${r.error}`);
    for (const e of errors.filter((e) => e.startsWith("PyTorch"))) log(`  ERROR ${e}`);
  }
  let tfjs: BenchReport["tfjs"] = null;
  if (o.sections.includes("tfjs")) {
    section(`TensorFlow.js comparison (batch ${o.batch})`);
    try {
      // a dynamic import keeps TensorFlow.js out of every other import graph
      const { compareTfjs } = await import("./tfjs.ts");
      const r = await compareTfjs({ batch: o.batch, runs: o.runs, timing, filter, log });
      tfjs = { info: r.info, rows: r.rows, error: null };
    } catch (e) {
      const msg = e instanceof Error ? `${e.message}` : String(e);
      log(`  TensorFlow.js comparison failed: ${msg}`);
      tfjs = { info: null, rows: [], error: msg };
    }
  }
  const { log: _log, ...settings } = o;
  return {
    date: new Date().toISOString(),
    adapter: {
      name: ctx.adapterName,
      fallback: ctx.isFallbackAdapter,
      timestampQuery: ctx.features.timestampQuery,
    },
    deno: Deno.version.deno,
    settings,
    ceilings: { fmaGflops: c.fmaGflops, copyGBs: c.copyGBs, ridge: c.ridge, detail: c.detail },
    kernels,
    steps,
    tfjs,
    torch,
    targets: evaluateTargets(c, kernels, steps, tfjs?.rows ?? [], torch),
    notes: o.notes ?? [],
    errors,
    seconds: (performance.now() - t0) / 1e3,
  };
}

// ---------------------------------------------------------------- targets of the issue

/** Issue 11: the GEMM rows of `final` reach this share of the FMA peak measured in the same run. */
const GEMM_PEAK_GOAL = 35;

export function evaluateTargets(
  c: Ceilings,
  kernels: KernelRow[],
  steps: StepRow[],
  cmp: CompareRow[],
  torch: TorchSection | null,
): BenchReport["targets"] {
  const out: BenchReport["targets"] = [];
  const minOf = (xs: number[]) => (xs.length ? Math.min(...xs) : null);
  const gemmPct = (rows: TimedRow[]) => minOf(rows.map((r) => (r.gflops / c.fmaGflops) * 100));
  // 1×1 convs of `final`: the GEMM kernel, and the conv2d op (rows that passed validation: the timed ones)
  const timed = kernels.filter(isTimed);
  const finalGemm = timed.filter((r) => r.kind === "gemm" && /final/.test(r.uses) && /NCHW/.test(r.name));
  const finalGemmT = timed.filter((r) => r.kind === "gemm" && /final/.test(r.uses) && /NHWC/.test(r.name));
  const finalConv1 = timed.filter((r) => r.kind === "conv1x1" && /final/.test(r.uses) && !/ 3→/.test(r.name));
  for (
    const [name, rows] of [
      ["conv2d 1×1 op", finalConv1],
      ["kernels/matmul.ts, NCHW GEMMs", finalGemm],
      ["kernels/matmul.ts, NHWC GEMMs", finalGemmT],
    ] as const
  ) {
    const v = gemmPct(rows);
    out.push({
      name: `final 1×1 convs (${name}): worst % of FMA peak`,
      value: v,
      goal: `≥ ${GEMM_PEAK_GOAL}%`,
      met: v === null ? null : v >= GEMM_PEAK_GOAL,
      detail: rows.length
        ? `${rows.length} rows, best ${Math.max(...rows.map((r) => r.gflops)).toFixed(2)} GFLOP/s, worst ${
          Math.min(...rows.map((r) => r.gflops)).toFixed(2)
        } GFLOP/s vs peak ${c.fmaGflops.toFixed(1)}`
        : "not measured",
    });
  }
  const ratio = (rows: CompareRow[]) => minOf(rows.map((r) => r.speedup));
  const groups: [string, CompareRow[]][] = [
    [
      "1×1 GEMMs vs tfjs matMul (kernels/matmul.ts)",
      cmp.filter((r) => r.op.startsWith("1×1") && r.impl !== "conv2d"),
    ],
    ["1×1 convs vs tfjs matMul (conv2d)", cmp.filter((r) => r.op.startsWith("1×1") && r.impl === "conv2d")],
    [
      "depthwise 7×7 forward + weight grad vs tfjs",
      cmp.filter((r) => r.op.startsWith("depthwise") && r.target),
    ],
  ];
  for (const [name, rows] of groups) {
    const v = ratio(rows);
    out.push({
      name: `${name}: worst speed-up`,
      value: v,
      goal: "≥ 2×",
      met: v === null ? null : v >= 2,
      detail: rows.length ? `${rows.length} rows` : "not measured (run with --compare tfjs)",
    });
  }
  for (const s of steps.filter((s) => s.stage === "final" && s.overheadPct !== null)) {
    out.push({
      name: `${s.name} step (batch ${s.batch}): overhead over the sum of its kernels`,
      value: s.overheadPct,
      goal: "≤ 20%",
      met: s.overheadPct! <= 20,
      detail: `profiled step ${s.profiledWallMs!.toFixed(1)} ms wall vs ${
        s.kernelMs!.toFixed(1)
      } ms of kernels (${s.passes} passes)`,
    });
  }
  // issue 11: the narrow and full `final` training steps within 3× of PyTorch CPU in the same run
  const finals = new Map<string, { name: string; batch: number }>();
  for (const s of [...steps, ...(torch?.rows ?? [])]) {
    if (s.stage === "final") finals.set(`${s.name}@${s.batch}`, { name: s.name, batch: s.batch });
  }
  for (const f of finals.values()) {
    const t = torch?.rows.find((r) => r.name === f.name && r.batch === f.batch);
    const v = t?.ratio ?? null;
    out.push({
      name: `${f.name} step (batch ${f.batch}): ours / PyTorch CPU`,
      value: v,
      goal: "≤ 3×",
      met: v === null ? null : v <= 3,
      detail: v !== null
        ? `${t!.oursMinMs!.toFixed(1)} ms vs ${t!.torchMinMs!.toFixed(1)} ms min to min (medians ${
          t!.oursMs!.toFixed(1)
        } vs ${t!.torchMs!.toFixed(1)}; PyTorch ${torch!.info!.version}, ${torch!.info!.threads} threads)`
        : !torch
        ? "not measured (run with --compare torch)"
        : torch.skipped ?? torch.error ?? t?.error ??
          (t?.oursMs === null ? "our step was not run (steps not in --only)" : "PyTorch did not run it"),
    });
  }
  if (!finals.size) {
    out.push({
      name: "narrow final and full final steps: ours / PyTorch CPU",
      value: null,
      goal: "≤ 3×",
      met: null,
      detail: torch?.skipped ?? torch?.error ?? "not measured (no `final` training step in this run)",
    });
  }
  return out;
}

// ---------------------------------------------------------------- terminal tables

function table(head: string[], rows: string[][], right: boolean[]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (right[i] ? c.padStart(w[i]) : c.padEnd(w[i]))).join("  ").trimEnd();
  return [line(head), w.map((n) => "-".repeat(n)).join("  "), ...rows.map(line)].join("\n");
}

const ms = (
  x: number,
) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toFixed(3));
const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)}`;

/** The "PyTorch side by side" section (bench/torch.ts). */
export const formatTorch: (t: TorchSection) => string[] = formatTorchSection;

/** The report as terminal tables. */
export function formatReport(r: BenchReport): string {
  const out: string[] = [];
  out.push(`# deno task bench — ${r.date}`);
  out.push(
    `adapter: ${r.adapter.name}${r.adapter.fallback ? " (fallback)" : ""}; Deno ${r.deno}; timing: ${
      r.adapter.timestampQuery ? "GPU timestamp queries" : "wall clock around batches + onSubmittedWorkDone"
    }; median of ${r.settings.runs} runs after warm-up; spread = (max − min) / median`,
  );
  for (const n of r.notes) out.push(`note: ${n}`);
  out.push("");
  out.push("## Ceilings");
  out.push(table(
    ["micro-kernel", "value", "unit", "ms", "spread"],
    r.ceilings.detail.map((
      d,
    ) => [d.name, d.value.toFixed(2), d.unit, ms(d.stats.medianMs), `${d.stats.spreadPct.toFixed(0)}%`]),
    [false, true, false, true, true],
  ));
  out.push(
    "load rows: cost of one load inside a loop, ns per float per invocation, by memory path (lower is better)",
  );
  out.push(
    `roofline: min(${r.ceilings.fmaGflops.toFixed(1)} GFLOP/s, intensity × ${
      r.ceilings.copyGBs.toFixed(2)
    } GB/s); ridge at ${r.ceilings.ridge.toFixed(1)} FLOP/byte`,
  );
  if (r.kernels.length) {
    out.push("");
    out.push(`## Kernels (batch ${r.settings.batch})`);
    out.push(
      "each row validated before it is timed: its kernel once on seeded data against the f64 CPU reference of " +
        "its op (kernels/reference/), at the row's batch or, where the reference would be slow, at a smaller " +
        "one with the same kernel variant; a row that fails is not timed",
    );
    out.push(table(
      [
        "layer",
        "op",
        "pass",
        "variant",
        "input",
        "validated",
        "ms",
        "spread",
        "GFLOP/s",
        "GB/s",
        "bound",
        "% roof",
        "uses",
      ],
      r.kernels.map((k) => {
        const v = validationText(k.validation, r.settings.batch);
        if (!isTimed(k)) {
          return [k.name, k.op, k.pass, k.variant ?? "-", k.shape, v, ...Array(6).fill("-"), k.uses];
        }
        return [
          k.name,
          k.op,
          k.pass,
          k.variant ?? "-",
          k.shape,
          v,
          ms(k.timing.medianMs),
          `${k.timing.spreadPct.toFixed(0)}%`,
          k.flops > 0 ? k.gflops.toFixed(2) : "-",
          k.gbs.toFixed(2),
          k.bound,
          k.pctRoofline.toFixed(1),
          k.uses,
        ];
      }),
      [false, false, false, false, false, false, true, true, true, true, false, true, false],
    ));
    for (const k of r.kernels.filter((k) => k.validation.status === "failed")) {
      out.push(`FAILED ${k.name} ${k.pass}: ${k.validation.detail}`);
    }
  }
  if (r.steps.length) {
    out.push("");
    out.push("## Training steps (forward + cross-entropy + backward + AdamW)");
    out.push(table(
      [
        "model",
        "batch",
        "params",
        "ms/step",
        "spread",
        "eager ms",
        "img/s",
        "GFLOP/s",
        "profiled ms",
        "kernels ms",
        "overhead",
        "host ms eager",
        "host ms replayed",
        "dispatches",
        "µs/dispatch eager",
        "µs/dispatch replayed",
        "pool MiB",
        "params+opt MiB",
        "textures MiB",
      ],
      r.steps.map((s) => [
        s.name,
        `${s.batch}`,
        `${s.params}`,
        ms(s.timing.medianMs),
        `${s.timing.spreadPct.toFixed(0)}%`,
        ms(s.eagerTiming.medianMs),
        s.imagesPerSec.toFixed(1),
        s.gflops.toFixed(2),
        s.profiledWallMs === null ? "-" : ms(s.profiledWallMs),
        s.kernelMs === null ? "-" : ms(s.kernelMs),
        s.overheadPct === null ? "-" : `${s.overheadPct.toFixed(1)}%`,
        ms(s.hostEagerMs),
        ms(s.hostMs),
        `${s.dispatches}`,
        ((s.hostEagerMs * 1e3) / s.dispatches).toFixed(1),
        ((s.hostMs * 1e3) / s.dispatches).toFixed(1),
        mib(s.poolBytes),
        mib(s.paramBytes),
        mib(s.textureBytes),
      ]),
      [false, ...Array<boolean>(18).fill(true)],
    ));
    for (const s of r.steps) {
      if (!s.topKernels.length) continue;
      out.push(
        `  ${s.name} slowest kernels: ` +
          s.topKernels.slice(0, 6).map((k) => `${k.label} ${ms(k.ms)} ms/${k.calls}`).join(", "),
      );
    }
  }
  if (r.torch) out.push("", ...formatTorch(r.torch));
  if (r.tfjs) {
    out.push("");
    out.push(`## TensorFlow.js WebGPU side by side (batch ${r.settings.batch})`);
    if (r.tfjs.error) out.push(`TensorFlow.js could not run: ${r.tfjs.error}`);
    if (r.tfjs.info) {
      out.push(
        `tfjs-core ${r.tfjs.info.version}, backend ${r.tfjs.info.backend}, timing: ${
          r.tfjs.rows[0]?.tfjsMethod ?? "-"
        }; ours: ${r.tfjs.rows[0]?.oursMethod ?? "-"}; speed-up = tfjs ms / ours ms`,
      );
    }
    if (r.tfjs.rows.length) {
      out.push(table(
        [
          "op",
          "pass",
          "ours",
          "shape",
          "tfjs ms",
          "tfjs GFLOP/s",
          "ours ms",
          "ours GFLOP/s",
          "speed-up",
          "target",
        ],
        r.tfjs.rows.map((c) => [
          c.op,
          c.pass,
          c.impl,
          c.shape,
          ms(c.tfjsMs),
          (c.flops / c.tfjsMs / 1e6).toFixed(2),
          ms(c.oursMs),
          (c.flops / c.oursMs / 1e6).toFixed(2),
          `×${c.speedup.toFixed(2)}`,
          c.target ? `≥ ×${c.target} ${c.speedup >= c.target ? "met" : "MISSED"}` : "",
        ]),
        [false, false, false, false, true, true, true, true, true, false],
      ));
    }
  }
  out.push("");
  out.push("## Targets");
  out.push(table(
    ["target", "value", "goal", "status", "detail"],
    r.targets.map((t) => [
      t.name,
      t.value === null ? "-" : t.value.toFixed(2),
      t.goal,
      t.met === null ? "not measured" : t.met ? "met" : "MISSED",
      t.detail,
    ]),
    [false, true, false, false, false],
  ));
  for (const e of r.errors) out.push(`ERROR: ${e}`);
  out.push("");
  out.push(`total ${r.seconds.toFixed(0)} s`);
  return out.join("\n");
}

/** Default training-step cases. */
export function defaultSteps(full: boolean, stepBatch: number | null, stages: string[]): StepCase[] {
  if (full) {
    return [
      ...stages.map((s) => ({ name: s, stage: s, batch: stepBatch ?? 64 })),
      { name: "final narrow", stage: "final", batch: stepBatch ?? 64, model: NARROW },
    ];
  }
  return [
    { name: "final narrow", stage: "final", batch: stepBatch ?? 64, model: NARROW },
    ...stages.map((s) => ({ name: s, stage: s, batch: stepBatch ?? 4 })),
  ];
}
