// PyTorch CPU as a bench peer (`deno task bench --compare torch`): the same training-step cases as
// bench/steps.ts, run by scripts/torch_bench.py on the notebook's own PyTorch models
// (scripts/golden/models.py). The parameter count of every case must equal ours, or the case is not
// timed.
//
// Fair by construction: both sides run in child processes, one at a time, so nothing of the other
// side is alive while one is timed. Per case, `rounds` rounds alternate ours, PyTorch, ours, PyTorch…
// (a machine whose speed drifts, like a shared VM, meets both sides alike); every round is a fresh
// process of the same shape on both sides: start, build the model, `warmup` steps, `runs` timed steps.
// Our child is this file run as a program (`--ours-child`), which initialises WebGPU itself; the
// process that drives the rounds only waits: when it holds a WebGPU device (the bench's, after its own
// sections) it first releases its buffer pool, and every round records the CPU time it used meanwhile
// (`parentCpuMs`: ~0, it stays idle) beside `parentHoldsDevice` and its resident memory. Each side's figure is the min
// and the median of all its samples over the rounds, and the headline ratio is min to min (the least
// disturbed step of each side; noise only adds time), with the median ratio and the spread beside it.
// Each round also records the load average at its start, the child's CPU time and involuntary context
// switches in its timed steps, and the CPU time this process used meanwhile (the evidence that it
// stayed idle).
//
// The interpreter: $CONVNEXT_TORCH_PYTHON if set, else Debian's /usr/bin/python3 (python3-torch), else
// python3 on PATH. Without one that can import torch the section is skipped with the reason.

import process from "node:process";
import { fileURLToPath } from "node:url";
import { buildModel, resolveConfig } from "../models/zoo.ts";
import { onMeta } from "../nn/module.ts";
import { gpu, sync, trimPool } from "../kernels/runtime.ts";
import type { KernelSettings } from "../experiments/host.ts";
import type { StepCase } from "./steps.ts";

export interface TorchInfo {
  version: string;
  python: string;
  threads: number;
  /** CPUs the script's process may run on (its affinity), when it says. */
  cpus?: number;
  mkldnn: boolean;
}

/** min / median / max of a side's samples over all rounds; spread = (max − min) / median, %. */
export interface SampleStats {
  n: number;
  minMs: number;
  medianMs: number;
  maxMs: number;
  spreadPct: number;
}

export interface TorchRow {
  name: string;
  stage: string;
  batch: number;
  oursParams: number;
  torchParams: number | null;
  /** Steps before the timed ones in every child process (both sides). */
  warmup: number;
  /** PyTorch's timed steps over all rounds. */
  runs: number;
  /** Rounds per side (a fresh child process each). */
  rounds: number;
  /** PyTorch's wall time per step over all rounds: median, min, max, spread (ms, %). */
  torchMs: number | null;
  torchMinMs: number | null;
  torchMaxMs: number | null;
  torchSpreadPct: number | null;
  /** Ours over all rounds (null when our side was not run: `--only torch`). */
  oursMs: number | null;
  oursMinMs: number | null;
  oursMaxMs: number | null;
  oursSpreadPct: number | null;
  oursRuns: number;
  /** oursMinMs / torchMinMs: how many times slower ours is, min to min (the issue's goal: ≤ 3). */
  ratio: number | null;
  /** oursMs / torchMs, the medians. */
  medianRatio: number | null;
  error: string | null;
}

export type Side = "ours" | "torch";

/** One child process of the comparison, in the order they ran. */
export interface RoundRecord {
  name: string;
  batch: number;
  /** 0-based round of its case. */
  round: number;
  side: Side;
  pid: number | null;
  /** Start, seconds since the comparison began; wall time of the whole child process, ms. */
  startS: number;
  wallMs: number;
  /** Its timed steps, ms each. */
  samplesMs: number[];
  /** The child's CPU time (all threads) and involuntary context switches over its timed steps. */
  cpuMs: number | null;
  nivcsw: number | null;
  /** CPU time this (the driving) process used while the child lived: ~0 when it stayed idle. */
  parentCpuMs: number;
  /** 1-minute load average when the child started (its own reading). */
  load1: number | null;
  error: string | null;
}

export interface TorchSection {
  info: TorchInfo | null;
  rows: TorchRow[];
  /** Every child process of the rounds, in order (which side ran when, and alone). */
  rounds: RoundRecord[];
  /** Rounds per side and case, and the steps of each child: `warmup` then `runs` timed. */
  roundsPerCase: number;
  warmup: number;
  runs: number;
  /** Whether the process driving the rounds had a WebGPU device of its own (the bench's: idle, its
   * buffer pool released first), and its resident memory when the rounds began, MiB. */
  parentHoldsDevice: boolean;
  parentRssMiB: number | null;
  /** Why PyTorch did not run (absent, no --allow-run): not a bench failure. */
  skipped: string | null;
  /** The script failed as a whole. */
  error: string | null;
}

/** The result of one case as scripts/torch_bench.py prints it. */
export interface TorchResult {
  name: string;
  stage: string;
  batch: number;
  params: number | null;
  warmup: number;
  runs: number;
  samplesMs: number[];
  medianMs: number | null;
  minMs: number | null;
  maxMs: number | null;
  /** Process CPU time and involuntary context switches over the timed steps (newer script). */
  cpuMs?: number | null;
  nivcsw?: number | null;
  error: string | null;
}

export interface TorchOutput {
  torch: string;
  python: string;
  threads: number;
  cpus?: number;
  mkldnn: boolean;
  pid?: number;
  /** 1-minute load average when the script started (newer script). */
  load1?: number | null;
  results: TorchResult[];
}

export const TORCH_SCRIPT = fileURLToPath(new URL("../scripts/torch_bench.py", import.meta.url));
const THIS_FILE = fileURLToPath(import.meta.url);
const DENO_JSON = fileURLToPath(new URL("../deno.json", import.meta.url));

/** Rounds per case and side by default ($CONVNEXT_TORCH_ROUNDS overrides); warm-up steps per child. */
export const DEFAULT_ROUNDS = 5;
export const COMPARE_WARMUP = 2;

/** Interpreters to try, in order. */
export function torchPythons(): string[] {
  const env = Deno.env.get("CONVNEXT_TORCH_PYTHON");
  return env ? [env] : ["/usr/bin/python3", "python3"];
}

/** One case of the script's input: our resolved configuration and parameter count. */
export function torchCase(c: StepCase, warmup: number, runs: number) {
  const cfg = resolveConfig(c.stage, c.model);
  const oursParams = onMeta(() => buildModel(c.stage, c.model)).numParameters();
  return {
    name: c.name,
    stage: cfg.stage,
    batch: c.batch,
    widths: cfg.widths,
    depths: cfg.depths,
    stemFeatures: cfg.stemFeatures,
    softmaxHead: cfg.softmaxHead,
    expectParams: oursParams,
    warmup,
    runs,
  };
}

// ---------------------------------------------------------------- pure parts: schedule and figures

/**
 * The order of the child processes: per case, `rounds` rounds of ours then PyTorch's (ours, torch,
 * ours, torch, …); a case without our side (`withOurs[i]` false) has PyTorch's rounds only.
 */
export function roundSchedule(
  withOurs: boolean[],
  rounds: number,
): { caseIndex: number; round: number; side: Side }[] {
  const out: { caseIndex: number; round: number; side: Side }[] = [];
  for (const [caseIndex, ours] of withOurs.entries()) {
    for (let round = 0; round < rounds; round++) {
      if (ours) out.push({ caseIndex, round, side: "ours" });
      out.push({ caseIndex, round, side: "torch" });
    }
  }
  return out;
}

/** min, median, max and spread of samples (null when there are none). */
export function sampleStats(xs: number[]): SampleStats | null {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  const med = s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  return {
    n: s.length,
    minMs: s[0],
    medianMs: med,
    maxMs: s[s.length - 1],
    spreadPct: med > 0 ? ((s[s.length - 1] - s[0]) / med) * 100 : 0,
  };
}

/** Ours against theirs: min to min (the headline) and median to median; null where a side is empty. */
export function compareSamples(ours: number[], theirs: number[]) {
  const o = sampleStats(ours), t = sampleStats(theirs);
  return {
    ours: o,
    torch: t,
    ratio: o && t && t.minMs > 0 ? o.minMs / t.minMs : null,
    medianRatio: o && t && t.medianMs > 0 ? o.medianMs / t.medianMs : null,
  };
}

// ---------------------------------------------------------------- child processes

/**
 * CPU time (user + system, all threads, ms) and involuntary context switches of this process so far:
 * getrusage through node:process, which needs no permission (/proc/self does: --allow-all).
 */
export function processUsage(): { cpuMs: number; nivcsw: number } {
  const u = process.resourceUsage();
  return { cpuMs: (u.userCPUTime + u.systemCPUTime) / 1e3, nivcsw: u.involuntaryContextSwitches };
}

function residentMiB(): number | null {
  try {
    return Deno.memoryUsage().rss / 2 ** 20;
  } catch {
    return null;
  }
}

async function forwardLines(stream: ReadableStream<Uint8Array>, log: (line: string) => void) {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const l of lines) if (l.trim()) log(l);
  }
  if (rest.trim()) log(rest);
}

interface ChildRun {
  code: number;
  /** The last line of stdout as JSON (null when it is not). */
  json: Record<string, unknown> | null;
  stdout: string;
  errLines: string[];
  pid: number;
  wallMs: number;
  parentCpuMs: number;
}

/** Runs `cmd args` with `input` on stdin, forwards its stderr lines, and waits for it to exit. */
async function runChild(
  cmd: string,
  args: string[],
  input: unknown,
  log?: (line: string) => void,
): Promise<ChildRun> {
  const cpu0 = processUsage().cpuMs;
  const t0 = performance.now();
  const child = new Deno.Command(cmd, { args, stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(input)));
  await writer.close();
  const errLines: string[] = [];
  const [stdout] = await Promise.all([
    new Response(child.stdout).text(),
    forwardLines(child.stderr, (l) => {
      errLines.push(l);
      log?.(l);
    }),
  ]);
  const status = await child.status;
  const wallMs = performance.now() - t0;
  const cpu1 = processUsage().cpuMs;
  let json: Record<string, unknown> | null = null;
  try {
    json = JSON.parse(stdout.trim().split("\n").pop() ?? "");
  } catch { /* the caller reports it */ }
  return {
    code: status.code,
    json,
    stdout,
    errLines,
    pid: child.pid,
    wallMs,
    parentCpuMs: cpu1 - cpu0,
  };
}

/**
 * Runs scripts/torch_bench.py on `request` with the first interpreter that has torch. Returns its
 * output, or `{ unavailable }` saying why none could run it; throws when the script itself fails.
 */
export async function runTorchScript(
  request: { threads?: number; measure?: boolean; cases: ReturnType<typeof torchCase>[] },
  opts: { pythons?: string[]; log?: (line: string) => void; onRun?: (run: ChildRun) => void } = {},
): Promise<TorchOutput | { unavailable: string }> {
  const why: string[] = [];
  for (const py of opts.pythons ?? torchPythons()) {
    let run: ChildRun;
    try {
      run = await runChild(py, [TORCH_SCRIPT, "-"], request, opts.log);
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
        return { unavailable: `running ${py} needs --allow-run (${e.message})` };
      }
      why.push(`${py}: ${e instanceof Deno.errors.NotFound ? "not found" : e}`);
      continue;
    }
    const parsed = run.json;
    if (run.code === 3 && parsed && typeof parsed.unavailable === "string") {
      why.push(parsed.unavailable);
      continue;
    }
    if (run.code !== 0 || !parsed || !Array.isArray(parsed.results)) {
      const detail = (parsed?.error as string | undefined) ??
        (run.errLines.slice(-5).join(" | ") || run.stdout.trim());
      throw new Error(`${py} ${TORCH_SCRIPT} exited with ${run.code}: ${detail}`);
    }
    opts.onRun?.(run);
    return parsed as unknown as TorchOutput;
  }
  const hint = Deno.env.get("CONVNEXT_TORCH_PYTHON")
    ? "check $CONVNEXT_TORCH_PYTHON"
    : "install python3-torch or set CONVNEXT_TORCH_PYTHON";
  return { unavailable: `no Python with PyTorch (${why.join("; ")}); ${hint}` };
}

/** What our child prints: its timed steps and what it cost. */
export interface OursChildOutput {
  adapter: string;
  samplesMs: number[];
  cpuMs: number | null;
  nivcsw: number | null;
  /** 1-minute load average when the child started. */
  load1: number | null;
  error: string | null;
}

/** Our side of one round: this file as a fresh Deno process that times `runs` steps after `warmup`. */
export async function runOursChild(
  c: StepCase,
  warmup: number,
  runs: number,
  settings: KernelSettings = {},
  log?: (line: string) => void,
): Promise<{ out: OursChildOutput; run: ChildRun }> {
  const args = [
    "run",
    "--quiet",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-net",
    "--allow-run",
    "--allow-sys=loadavg",
    "--config",
    DENO_JSON,
    THIS_FILE,
    "--ours-child",
  ];
  const run = await runChild(Deno.execPath(), args, { case: c, warmup, runs, settings }, log);
  const j = run.json as OursChildOutput | null;
  if (!j || !Array.isArray(j.samplesMs)) {
    const detail = (j?.error as string | undefined) ??
      (run.errLines.slice(-5).join(" | ") || run.stdout.trim());
    return {
      out: {
        adapter: "",
        samplesMs: [],
        cpuMs: null,
        nivcsw: null,
        load1: null,
        error: `exit ${run.code}: ${detail}`,
      },
      run,
    };
  }
  return { out: j, run };
}

/** The child's side (`deno run bench/torch.ts --ours-child` with a request on stdin). */
async function oursChildMain(): Promise<void> {
  const req = JSON.parse(await new Response(Deno.stdin.readable).text()) as {
    case: StepCase;
    warmup: number;
    runs: number;
    settings?: KernelSettings;
  };
  const out: OursChildOutput = {
    adapter: "",
    samplesMs: [],
    cpuMs: null,
    nivcsw: null,
    load1: null,
    error: null,
  };
  const t0 = performance.now();
  const say = (what: string) =>
    console.error(`    ours (pid ${Deno.pid}): ${what} at ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
  try {
    out.load1 = Deno.loadavg()[0];
  } catch { /* no --allow-sys */ }
  try {
    // imported here: the driving process never loads WebGPU through this file
    const { initEngine } = await import("../experiments/host.ts");
    const { prepareStep, timeSteps } = await import("./steps.ts");
    const { compilePipelines, sync } = await import("../kernels/runtime.ts");
    const { stepPipelines } = await import("../models/plan.ts");
    const { autotune } = await import("../kernels/autotune.ts");
    const { autotuneEnabled } = await import("../kernels/planner.ts");
    const { ctx } = await initEngine(req.settings ?? {});
    out.adapter = ctx.adapterName;
    say(`WebGPU ready (${ctx.adapterName})`);
    // the step's kernels compiled up front (as the bench's steps section does), so the log says so
    const kernels = stepPipelines(req.case.stage, { seed: 1, ...req.case.model }, req.case.batch);
    say(`compiling ${kernels.length} kernels`);
    await compilePipelines(kernels);
    say("kernels compiled");
    const p = prepareStep(req.case);
    if (autotuneEnabled()) {
      // as bench/steps.ts: meet every shape, then time the competing variants (cached winners: quick)
      p.step();
      await sync();
      await autotune({ log: (l) => console.error(l) });
    }
    for (let i = 0; i < req.warmup; i++) {
      p.step();
      await sync();
      if (i === 0) say("first step");
    }
    const u0 = processUsage();
    const st = await timeSteps(p, 0, Math.max(1, req.runs));
    const u1 = processUsage();
    say(`${req.runs} timed steps done`);
    out.samplesMs = st.samplesMs ?? [st.medianMs];
    out.cpuMs = u1.cpuMs - u0.cpuMs;
    out.nivcsw = u1.nivcsw - u0.nivcsw;
    p.dispose();
  } catch (e) {
    out.error = e instanceof Error ? e.message : String(e);
  }
  console.log(JSON.stringify(out));
  Deno.exit(out.error ? 1 : 0);
}

// ---------------------------------------------------------------- the comparison

/** Joins PyTorch's results with our samples of the same case (null: our side was not run). */
export function torchRows(
  cases: ReturnType<typeof torchCase>[],
  results: TorchResult[],
  ours: (number[] | null)[],
  rounds = 1,
): TorchRow[] {
  return cases.map((c, i) => {
    const r = results[i];
    const mine = ours[i] ?? null;
    const torchParams = r?.params ?? null;
    let error = r ? r.error : "no result from the PyTorch script";
    if (!error && torchParams !== c.expectParams) {
      error = `parameter counts differ: PyTorch ${torchParams}, ours ${c.expectParams}`;
    }
    const cmp = compareSamples(mine ?? [], error ? [] : r?.samplesMs ?? []);
    return {
      name: c.name,
      stage: c.stage,
      batch: c.batch,
      oursParams: c.expectParams,
      torchParams,
      warmup: c.warmup,
      runs: r?.samplesMs?.length ?? 0,
      rounds,
      torchMs: cmp.torch?.medianMs ?? null,
      torchMinMs: cmp.torch?.minMs ?? null,
      torchMaxMs: cmp.torch?.maxMs ?? null,
      torchSpreadPct: cmp.torch?.spreadPct ?? null,
      oursMs: cmp.ours?.medianMs ?? null,
      oursMinMs: cmp.ours?.minMs ?? null,
      oursMaxMs: cmp.ours?.maxMs ?? null,
      oursSpreadPct: cmp.ours?.spreadPct ?? null,
      oursRuns: cmp.ours?.n ?? 0,
      ratio: error ? null : cmp.ratio,
      medianRatio: error ? null : cmp.medianRatio,
      error,
    };
  });
}

function holdsDevice(): boolean {
  try {
    gpu();
    return true;
  } catch {
    return false;
  }
}

/**
 * The PyTorch section: per case, `rounds` rounds of our child process then PyTorch's (PyTorch's only
 * with `ours: false`), each alone, after a first PyTorch child that only builds the models and checks
 * the parameter counts.
 */
export async function compareTorch(
  cases: StepCase[],
  opts: {
    /** Warm-up steps per child (at least COMPARE_WARMUP) and timed steps per child. */
    warmup?: number;
    runs: number;
    /** Whether our side runs (default true); false: PyTorch's rounds only (`--only torch`). */
    ours?: boolean;
    rounds?: number;
    kernelSettings?: KernelSettings;
    log?: (line: string) => void;
    pythons?: string[];
  },
): Promise<TorchSection> {
  const warmup = Math.max(COMPARE_WARMUP, opts.warmup ?? 0);
  const runs = Math.max(1, opts.runs);
  const envRounds = Number(Deno.env.get("CONVNEXT_TORCH_ROUNDS"));
  const rounds = Math.max(
    1,
    opts.rounds ?? (Number.isInteger(envRounds) && envRounds > 0 ? envRounds : DEFAULT_ROUNDS),
  );
  const parentHoldsDevice = holdsDevice();
  if (parentHoldsDevice) {
    // nothing of ours pending, and the pooled buffers (activations of earlier sections) given back
    await sync();
    trimPool();
  }
  const section: TorchSection = {
    info: null,
    rows: [],
    rounds: [],
    roundsPerCase: rounds,
    warmup,
    runs,
    parentHoldsDevice,
    parentRssMiB: residentMiB(),
    skipped: null,
    error: null,
  };
  const log = opts.log ?? (() => {});
  const req = cases.map((c) => torchCase(c, warmup, runs));
  const withOurs = cases.map(() => opts.ours ?? true);
  const threads = navigator.hardwareConcurrency || 1;
  const torchRun = (cs: typeof req, measure = true, onRun?: (r: ChildRun) => void) =>
    runTorchScript({ threads, measure, cases: cs }, { pythons: opts.pythons, log, onRun });
  try {
    // the models and their parameter counts first (no timing): a case that differs is not timed
    const check = await torchRun(req, false);
    if ("unavailable" in check) return { ...section, skipped: check.unavailable };
    section.info = infoOf(check);
    const oursSamples: number[][] = cases.map(() => []);
    const theirs: TorchResult[][] = cases.map(() => []);
    const failed = new Set<number>();
    const t0 = performance.now();
    for (const slot of roundSchedule(withOurs, rounds)) {
      const i = slot.caseIndex, c = cases[i];
      if (check.results[i]?.error || failed.has(i)) continue;
      const startS = (performance.now() - t0) / 1e3;
      let rec: RoundRecord;
      if (slot.side === "ours") {
        const { out, run } = await runOursChild(c, warmup, runs, opts.kernelSettings, log);
        rec = { ...record(c, slot, run, startS), samplesMs: out.samplesMs, cpuMs: out.cpuMs };
        rec.nivcsw = out.nivcsw;
        rec.load1 = out.load1;
        rec.error = out.error;
        if (out.error) failed.add(i);
        else oursSamples[i].push(...out.samplesMs);
      } else {
        let run: ChildRun | null = null;
        const out = await torchRun([req[i]], true, (r) => run = r);
        if ("unavailable" in out) return { ...section, skipped: out.unavailable };
        const res = out.results[0];
        rec = { ...record(c, slot, run!, startS), samplesMs: res?.samplesMs ?? [] };
        rec.pid = out.pid ?? rec.pid;
        rec.load1 = out.load1 ?? null;
        rec.cpuMs = res?.cpuMs ?? null;
        rec.nivcsw = res?.nivcsw ?? null;
        rec.error = res?.error ?? null;
        theirs[i].push(res);
        if (res?.error) failed.add(i);
      }
      section.rounds.push(rec);
      log(roundLine(rec, rounds));
    }
    const results = cases.map((_, i) =>
      check.results[i]?.error ? check.results[i] : mergeResults(theirs[i]) ?? check.results[i]
    );
    section.rows = torchRows(req, results, oursSamples.map((s, i) => (withOurs[i] ? s : null)), rounds);
    for (const r of section.rows) {
      const errs = section.rounds.filter((x) => x.name === r.name && x.batch === r.batch && x.error);
      if (!r.error && errs.length) r.error = `${errs[0].side} round ${errs[0].round + 1}: ${errs[0].error}`;
      if (r.error) r.ratio = r.medianRatio = null;
      log(`  ${r.name} batch ${r.batch}: ${rowSummary(r)}`);
    }
    return section;
  } catch (e) {
    return { ...section, error: e instanceof Error ? e.message : String(e) };
  }
}

function record(
  c: StepCase,
  slot: { round: number; side: Side },
  run: ChildRun,
  startS: number,
): RoundRecord {
  return {
    name: c.name,
    batch: c.batch,
    round: slot.round,
    side: slot.side,
    pid: run.pid,
    startS,
    wallMs: run.wallMs,
    samplesMs: [],
    cpuMs: null,
    nivcsw: null,
    parentCpuMs: run.parentCpuMs,
    load1: null,
    error: null,
  };
}

const f1 = (x: number | null | undefined) => (x === null || x === undefined ? "-" : x.toFixed(1));

/** The progress line of one child process. */
export function roundLine(r: RoundRecord, rounds: number): string {
  const s = sampleStats(r.samplesMs);
  return `  round ${r.round + 1}/${rounds} ${r.name} batch ${r.batch}: ${
    r.side === "ours" ? "ours   " : "PyTorch"
  } alone (pid ${r.pid}, ${(r.wallMs / 1e3).toFixed(1)} s, load ${f1(r.load1)}): ` +
    (r.error ? `ERROR ${r.error}` : `min ${f1(s?.minMs)} median ${f1(s?.medianMs)} ms/step`) +
    `; its CPU ${f1(r.cpuMs)} ms, ${r.nivcsw ?? "-"} preemptions; this process meanwhile ${
      f1(r.parentCpuMs)
    } ms CPU`;
}

function rowSummary(r: TorchRow): string {
  if (r.error) return `ERROR ${r.error}`;
  const torch = `PyTorch min ${f1(r.torchMinMs)} median ${f1(r.torchMs)} ms (spread ${
    f1(r.torchSpreadPct)
  }%, ${r.runs} steps)`;
  if (r.oursMs === null) return torch;
  return `ours min ${f1(r.oursMinMs)} median ${f1(r.oursMs)} ms (spread ${
    f1(r.oursSpreadPct)
  }%, ${r.oursRuns} steps), ` +
    `${torch}; ratio min to min ×${r.ratio!.toFixed(2)}, medians ×${r.medianRatio!.toFixed(2)}`;
}

function infoOf(out: TorchOutput): TorchInfo {
  const info: TorchInfo = {
    version: out.torch,
    python: out.python,
    threads: out.threads,
    mkldnn: out.mkldnn,
  };
  if (out.cpus !== undefined) info.cpus = out.cpus;
  return info;
}

/** One result from several rounds of the same case: all samples, their median and range. */
export function mergeResults(rs: TorchResult[]): TorchResult {
  const bad = rs.find((r) => r?.error);
  if (bad || rs.length === 0) return bad ?? rs[0];
  const samples = rs.flatMap((r) => r.samplesMs);
  const st = sampleStats(samples)!;
  return {
    ...rs[0],
    runs: samples.length,
    samplesMs: samples,
    medianMs: st.medianMs,
    minMs: st.minMs,
    maxMs: st.maxMs,
  };
}

// ---------------------------------------------------------------- report text

const ms = (
  x: number,
) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toFixed(3));

/** The "PyTorch side by side" section of the report. */
export function formatTorchSection(t: TorchSection): string[] {
  const out = ["## PyTorch side by side (training steps, CPU)"];
  if (t.skipped) out.push(`PyTorch skipped: ${t.skipped}`);
  if (t.error) out.push(`PyTorch could not run: ${t.error}`);
  if (t.info) {
    out.push(
      `PyTorch ${t.info.version} (${t.info.python}), ${t.info.threads} threads${
        t.info.cpus === undefined ? "" : ` on ${t.info.cpus} usable CPUs`
      }, oneDNN ${
        t.info.mkldnn ? "on" : "off"
      }. Each side alone in its own child process, one at a time: per case ${t.roundsPerCase} rounds of ` +
        `ours, PyTorch, ours, PyTorch…, each a fresh process (${t.warmup} warm-up steps, then ${t.runs} timed); ` +
        "wall clock; min and median over all rounds; ratio = ours min / PyTorch min (the least disturbed " +
        "step of each: noise only adds), medians beside it; spread = (max − min) / median. PyTorch's " +
        `${t.info.threads} threads meet at a barrier in every op, so any other runnable thread on the cores ` +
        "stalls them: its spread is large on a busy or shared machine (read the loads below)",
    );
    const idle = t.rounds.map((r) => r.parentCpuMs).filter((x): x is number => x !== null);
    out.push(
      `The process driving the rounds (${
        t.parentHoldsDevice
          ? "the bench, holding its WebGPU device with its buffer pool released"
          : "holding no WebGPU device"
      }` +
        `${t.parentRssMiB === null ? "" : `, ${t.parentRssMiB.toFixed(0)} MiB resident`}) only waited: ` +
        `≤ ${idle.length ? Math.max(...idle).toFixed(0) : "-"} ms of CPU while any one child ran`,
    );
  }
  if (t.rows.length) {
    const cell = (x: number | null) => (x === null ? "-" : ms(x));
    const pct = (x: number | null) => (x === null ? "-" : `${x.toFixed(0)}%`);
    const rows = t.rows.map((r) => [
      r.name,
      `${r.batch}`,
      `${r.oursParams}`,
      r.torchParams === null ? "-" : `${r.torchParams}`,
      cell(r.oursMinMs),
      cell(r.oursMs),
      pct(r.oursSpreadPct),
      cell(r.torchMinMs),
      cell(r.torchMs),
      pct(r.torchSpreadPct),
      r.ratio === null ? (r.error ? `ERROR: ${r.error}` : "-") : `×${r.ratio.toFixed(2)}`,
      r.medianRatio === null ? "-" : `×${r.medianRatio.toFixed(2)}`,
    ]);
    const head = [
      "model",
      "batch",
      "params ours",
      "params torch",
      "ours min",
      "ours median",
      "spread",
      "torch min",
      "torch median",
      "spread",
      "ratio min/min",
      "ratio medians",
    ];
    const right = head.map((_, i) => i > 0 && i < 10);
    const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (cells: string[]) =>
      cells.map((c, i) => (right[i] ? c.padStart(w[i]) : c.padEnd(w[i]))).join("  ").trimEnd();
    out.push("ms/step:", line(head), w.map((n) => "-".repeat(n)).join("  "), ...rows.map(line));
  }
  const byCase = new Map<string, RoundRecord[]>();
  for (const r of t.rounds) {
    const k = `${r.name} batch ${r.batch}`;
    byCase.set(k, [...(byCase.get(k) ?? []), r]);
  }
  for (const [k, rs] of byCase) {
    const side = (s: Side) =>
      rs.filter((r) => r.side === s).map((
        r,
      ) => (r.error ? "ERR" : ms(sampleStats(r.samplesMs)?.minMs ?? NaN)))
        .join(" ");
    const loads = rs.map((r) => r.load1).filter((x): x is number => x !== null);
    out.push(
      `  ${k}, min of each round: ours ${side("ours") || "-"}; PyTorch ${side("torch")}; load average ${
        loads.length ? `${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)}` : "-"
      }`,
    );
  }
  return out;
}

if (import.meta.main) {
  if (Deno.args.includes("--ours-child")) await oursChildMain();
  else {
    console.error("bench/torch.ts is a module; `--ours-child` (request on stdin) is the comparison's child");
    Deno.exit(2);
  }
}
