// Autotune: where several variants can run a shape, time each at first use and keep the fastest, as
// Burn/CubeCL's autotune does. Recording a step is synchronous and timing is not, so the planner
// queues the shapes it meets without a winner (while autotune is on) and `autotune()` times them
// afterwards on scratch buffers; the trainer does this once before its first step, on a dry run of
// one step, so every real step of a run uses the same kernels. Winners go to a store (the host keeps
// it on disk per adapter and runtime version) so later processes start with them.
//
// How a shape is decided:
// * Shapes go largest first (by multiply-adds, then by key): a deterministic order of expected benefit,
//   so two runs tune the same shapes. Within the time budget (compiling the candidates counts: on a
//   cold cache it is much of the cost), what the budget leaves runs the defaults and stays queued for a
//   later run. Tune keys are anchored to batch buckets (kernels/variant.ts), so another batch size of the
//   same class takes the tuned winner without timing anything.
// * The candidates' pipelines are compiled together (createComputePipelineAsync), then a timer of the
//   device's time (kernels/tune_timer.ts: GPU timestamps, else the difference of two submits of R and
//   2R runs) times each: a sample of one warm run sizes R so a sample is long against the timer's
//   noise (and drops a candidate 6× slower than the best so far; 30× on its cold first run); the rest
//   are sampled in rounds (3 to 7 samples each; the first round drops those 4× slower than its best)
//   until every rival's fastest sample is slower than the best's slowest. The timer is checked once per process on a known cost
//   first: 2R runs must read twice R runs, and timestamps must agree with the host's clock within 1.5×
//   where it sees the kernel.
// * The fastest (by the timer's statistic, the median of its samples) is checked against the CPU reference (kernels/tune_check.ts)
//   before it may win; one that fails is excluded (said in the log) and the next is checked. The
//   decision's margin (second best / best − 1) is logged and stored beside the winner.

import { acquireBuffer, collectPipelines, compilePipelines, gpu, releaseBuffer, sync } from "./runtime.ts";
import { convBackwardInput, convBackwardWeight, convForward } from "./conv.ts";
import { matmul } from "./matmul.ts";
import { conv1x1BackwardInputGeluGrad, conv1x1ForwardGelu } from "./conv1x1.ts";
import {
  type ConvEpilogue,
  convVariants,
  defaultConvVariant,
  defaultMatmulVariant,
  loadWinners,
  matmulVariants,
  pendingTunes,
  recordWinner,
  setAutotune,
  tuneCandidates,
  tunedWinners,
  type TuneJob,
} from "./planner.ts";
import { isSoftwareAdapter } from "./profile.ts";
import type { ConvShape, MatmulDims } from "./shapes.ts";
import {
  calibrate,
  type KernelTimer,
  median,
  repsFor,
  type TimerCheck,
  timestampTimer,
  wallDifferenceTimer,
} from "./tune_timer.ts";
import { checkCandidate, clearCheckReferences } from "./tune_check.ts";

export type { KernelTimer, TimerCheck } from "./tune_timer.ts";

/** Where winners persist between processes. */
export interface AutotuneStore {
  load(): Record<string, string>;
  save(winners: Record<string, string>): void;
}

let store: AutotuneStore | null = null;

/** Turns autotune on with `store` (or in memory only when null) and loads the stored winners. */
export function enableAutotune(s: AutotuneStore | null): void {
  store = s;
  if (s) loadWinners(s.load());
  setAutotune(true);
}

/** Turns autotune off: the planner gives the profile's deterministic defaults. */
export function disableAutotune(): void {
  store = null;
  setAutotune(false);
}

/** Default seconds of tuning per run on a software adapter (compiles and kernels are slow there). */
export const SOFTWARE_BUDGET_S = 60;
/** Default seconds of tuning per run on a GPU (compiles take milliseconds, kernels microseconds). */
export const GPU_BUDGET_S = 30;

/** The default time budget (seconds) on the current adapter. */
export function defaultAutotuneBudget(): number {
  const { adapterName, isFallbackAdapter } = gpu();
  return isSoftwareAdapter(adapterName, isFallbackAdapter) ? SOFTWARE_BUDGET_S : GPU_BUDGET_S;
}

/** One shape's decision. */
export interface TuneResult {
  key: string;
  winner: string;
  /** What the profile would have run. */
  fallback: string;
  /** Milliseconds per run of each candidate timed (the timer's statistic; a dropped one: its first sample). */
  ms: Record<string, number>;
  /** (slowest − fastest sample) / median of each candidate, over its samples. */
  spread: Record<string, number>;
  /** Samples of each candidate (1: dropped after its first). */
  samples: Record<string, number>;
  /** Second best / best − 1, among the candidates not rejected (Infinity: no rival was left). */
  margin: number;
  /** The second best (null: none). */
  runnerUp: string | null;
  /** Candidates excluded by the reference check (or that failed to run), with what was wrong. */
  rejected: Record<string, string>;
  /** Compiling the candidates' pipelines, ms. */
  compileMs: number;
}

/** What a call of `autotune` did. */
export interface AutotuneReport {
  results: TuneResult[];
  /** Keys of the queued shapes the budget left for a later run (they run the defaults meanwhile). */
  left: string[];
  /** Shapes queued when it started. */
  queued: number;
  /** Wall seconds it took. */
  seconds: number;
  /** The budget it ran under, seconds. */
  budgetS: number;
  /** The timer's method and its check on a known cost (null: nothing was timed). */
  timer: { method: string; check: TimerCheck } | null;
}

export interface AutotuneOptions {
  /** Seconds to spend at most, compiling included (default `defaultAutotuneBudget()`). */
  budgetS?: number;
  log?: (line: string) => void;
  /** Called before the first shape and after each: shapes done of all queued. */
  progress?: (done: number, total: number) => void;
  /** The timer (default: timestamps where they work, else the submit difference); tests inject one. */
  timer?: KernelTimer;
  /** Which timer to pick and check where none is injected (default "auto"). */
  method?: "auto" | "gpu-timestamp" | "wall-difference";
  /** The clock the budget is kept by, ms (default performance.now); tests inject one. */
  clock?: () => number;
  /** Samples of each candidate: at least, at most (default 3, 7). */
  minSamples?: number;
  maxSamples?: number;
}

type Runner = { run(variant: string): void; free(): void };

function convRunner(
  s: ConvShape,
  pass: "forward" | "inputGrad" | "weightGrad",
  epilogue?: ConvEpilogue,
): Runner {
  const xN = s.n * s.c * s.h * s.w, wN = s.o * (s.c / s.groups) * s.k * s.k, yN = s.n * s.o * s.oh * s.ow;
  // the GELU's pre-activation has the shape of the GEMM's result
  const preN = epilogue === "gelu" ? yN : epilogue === "dgelu" ? xN : 0;
  const bufs = [xN, wN, yN, preN].filter((n) => n > 0).map((n) => acquireBuffer(n * 4));
  const [x, w, y, pre] = bufs;
  const run = (variant: string) => {
    if (epilogue === "gelu") conv1x1ForwardGelu(x, w, null, pre, y, s, variant);
    else if (epilogue === "dgelu") conv1x1BackwardInputGeluGrad(y, w, pre, x, s, variant);
    else if (pass === "forward") convForward(x, w, null, y, s, variant);
    else if (pass === "inputGrad") convBackwardInput(y, w, x, s, variant);
    else convBackwardWeight(y, x, w, s, variant);
  };
  return { run, free: () => bufs.forEach(releaseBuffer) };
}

function matmulRunner(d: MatmulDims): Runner {
  const aN = (d.batchA ? d.batch : 1) * d.m * d.k, bN = (d.batchB ? d.batch : 1) * d.k * d.n;
  const cN = (d.sumBatch ? 1 : d.batch) * d.m * d.n;
  const bufs = [aN, bN, cN].map((n) => acquireBuffer(n * 4));
  return {
    run: (variant: string) => matmul(bufs[0], bufs[1], bufs[2], d, { variant }),
    free: () => bufs.forEach(releaseBuffer),
  };
}

/** Multiply-adds of a queued shape: the order of expected benefit. */
export function jobWork(job: TuneJob): number {
  if (job.op === "matmul") return job.d.batch * job.d.m * job.d.n * job.d.k;
  const s = job.s;
  return s.n * s.o * s.oh * s.ow * (s.c / s.groups) * s.k * s.k;
}

/** Queued shapes in the order they are tuned: most multiply-adds first, then by key. */
export function tuneOrder(jobs: [string, TuneJob][]): [string, TuneJob][] {
  return [...jobs].sort((a, b) => jobWork(b[1]) - jobWork(a[1]) || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/** The timer this process decides by, once checked (null: none passed; undefined: not chosen yet). */
let chosen: { timer: KernelTimer; check: TimerCheck | null } | null | undefined;

/** Forgets the chosen timer (tests). */
export function resetAutotuneTimer(): void {
  chosen = undefined;
}

/**
 * Picks and checks the timer on `run` (a compiled, warm kernel): timestamps where they read the known
 * cost right (2R runs twice R runs) and agree with the host's clock (the submit difference, where that
 * sees the kernel), else the submit difference (its target doubled once if the first check fails).
 */
async function chooseTimer(
  run: () => void,
  variant: string,
  what: string,
  log: (line: string) => void,
  method: NonNullable<AutotuneOptions["method"]>,
): Promise<{ timer: KernelTimer; check: TimerCheck } | null> {
  const say = (t: KernelTimer, c: TimerCheck) =>
    `${t.method}, checked on ${variant} of ${what}: ${c.reps} run(s) ${c.once.toFixed(2)} ms, ${
      2 * c.reps
    } runs ${c.twice.toFixed(2)} ms (×${c.ratio.toFixed(2)}, 2 ± 0.3 passes)`;
  const ts = method === "wall-difference" ? null : timestampTimer();
  if (ts) {
    const c = await calibrate(ts, run, variant);
    if (c.ok && method === "gpu-timestamp") return { timer: ts, check: c };
    if (c.ok) {
      // The host's clock is the ground truth where it can see the kernel (a sample as long as its
      // target): timestamps more than 1.5× off the submit difference measure something else (a software
      // adapter may write them before its threads are done).
      const wall = await wallDifferenceTimer();
      const w = await calibrate(wall, run, variant);
      const perTs = c.once / c.reps, perWall = w.once / w.reps;
      const seen = w.ok && w.once >= wall.targetMs / 2;
      const agree = !seen || (perTs <= 1.5 * perWall && perWall <= 1.5 * perTs);
      log(
        `autotune: timer gpu-timestamp reads ${perTs.toFixed(2)} ms per run of ${variant}, the submit ` +
          `difference ${seen ? `${perWall.toFixed(2)} ms` : "too little to tell"}${
            agree ? "" : ": they disagree, the submit difference decides"
          }`,
      );
      return agree ? { timer: ts, check: c } : { timer: wall, check: w };
    }
    log(`autotune: timer ${say(ts, c)}: timestamps fail, trying the submit difference`);
  }
  if (method === "gpu-timestamp") return null;
  const wall = await wallDifferenceTimer();
  for (let attempt = 0; attempt < 2; attempt++) {
    const c = await calibrate(wall, run, variant);
    if (c.ok) return { timer: wall, check: c };
    log(`autotune: timer ${say(wall, c)}: fails${attempt ? "" : "; again with samples twice as long"}`);
    wall.targetMs *= 2;
  }
  return null;
}

const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : "∞");

/** The lines a decision is logged as (its margin; rejected candidates). */
export function describeResult(r: TuneResult): string {
  const times = Object.entries(r.ms).sort((a, b) => a[1] - b[1]).map(([v, t]) =>
    `${v} ${t.toFixed(3)} ms${r.samples[v] > 1 ? ` ±${pct(r.spread[v] / 2)}` : " (dropped)"}${
      r.rejected[v] ? " REJECTED" : ""
    }`
  );
  const by = r.runnerUp ? `by ${pct(r.margin)} over ${r.runnerUp}` : "no rival left";
  const def = r.winner === r.fallback ? ", the default," : "";
  const other = r.winner === r.fallback ? "" : ` (default ${r.fallback})`;
  return `autotune ${r.key}: ${r.winner}${def} ${by}${other} [${times.join(", ")}]`;
}

/**
 * Times the candidates of every queued shape within the budget (see the head of this file) and records
 * the winners; what the budget leaves stays queued (it runs the defaults) and is listed in `left`.
 */
export async function autotune(opts: AutotuneOptions = {}): Promise<AutotuneReport> {
  const clock = opts.clock ?? (() => performance.now());
  const log = opts.log ?? (() => {});
  const budgetS = opts.budgetS ?? defaultAutotuneBudget();
  const minSamples = Math.max(1, opts.minSamples ?? 3),
    maxSamples = Math.max(minSamples, opts.maxSamples ?? 7);
  const t0 = clock();
  const jobs = tuneOrder(pendingTunes());
  const results: TuneResult[] = [];
  const method = opts.method ?? "auto";
  let timing: typeof chosen = opts.timer
    ? { timer: opts.timer, check: null }
    : method === "auto"
    ? chosen
    : undefined;
  let done = 0, started = 0;
  opts.progress?.(0, jobs.length);
  try {
    for (const [key, job] of jobs) {
      if (clock() - t0 >= budgetS * 1e3) break;
      if (timing === null) break; // no timer passed its check in this process
      started++;
      const fallback = job.op === "conv" ? defaultConvVariant(job.s, job.pass) : defaultMatmulVariant(job.d);
      const cands = tuneCandidates(job.op === "conv" ? convVariants(job.s, job.pass) : matmulVariants(job.d));
      // the profile's default first: the likely winner, so that slow candidates are dropped after one run
      const vars = [...cands].sort((a, b) => Number(b === fallback) - Number(a === fallback));
      if (vars.length < 2) {
        recordWinner(key, vars[0], cands);
        opts.progress?.(++done, jobs.length);
        continue;
      }
      const runner = job.op === "conv" ? convRunner(job.s, job.pass, job.epilogue) : matmulRunner(job.d);
      try {
        const rejected: Record<string, string> = {};
        // compile every candidate's pipelines together, then run each once (first touches)
        const c0 = performance.now();
        try {
          await compilePipelines(collectPipelines(() => vars.forEach((v) => runner.run(v))));
        } catch { /* each candidate compiles on its first run below instead */ }
        // the first that runs is warmed here (the timer is checked on it); the others' first sample warms them
        const live: string[] = [];
        for (const v of vars) {
          if (live.length) live.push(v);
          else {
            try {
              runner.run(v);
              await sync();
              live.push(v);
            } catch (e) {
              rejected[v] = `failed to run: ${(e as Error).message}`;
            }
          }
        }
        const compileMs = performance.now() - c0;
        if (!live.length) {
          log(`autotune ${key}: no candidate runs (${Object.values(rejected)[0]}); the default stays`);
          continue;
        }
        if (timing === undefined) {
          timing = await chooseTimer(() => runner.run(live[0]), live[0], key, log, method);
          if (method === "auto") chosen = timing;
          if (!timing) {
            log(
              "autotune: no timer reads a known cost right (the machine is too busy?): " +
                "the kernels keep their defaults, and the shapes are tuned on a later run",
            );
            started--;
            break;
          }
          const c = timing.check!;
          log(
            `autotune: timer ${timing.timer.method}, checked on ${live[0]} of ${key}: ${c.reps} run(s) ` +
              `${c.once.toFixed(2)} ms, ${2 * c.reps} runs ${c.twice.toFixed(2)} ms (×${c.ratio.toFixed(2)})`,
          );
        }
        const r = await decide(key, job, live, fallback, timing.timer, runner, rejected, {
          minSamples,
          maxSamples,
        });
        if (!r) {
          log(
            `autotune ${key}: every candidate failed to run or the reference check (${
              JSON.stringify(rejected)
            }); the default stays`,
          );
          continue;
        }
        r.compileMs = compileMs;
        for (const [v, why] of Object.entries(rejected)) log(`autotune ${key}: ${v} excluded: ${why}`);
        recordWinner(key, r.winner, cands, `margin ${pct(r.margin)} ${timing.timer.method}`);
        results.push(r);
        log(describeResult(r));
      } finally {
        runner.free();
        if (done + 1 === started) opts.progress?.(++done, jobs.length);
      }
    }
  } finally {
    clearCheckReferences();
  }
  if (results.length) store?.save(tunedWinners());
  return {
    results,
    left: jobs.slice(started).map(([k]) => k),
    queued: jobs.length,
    seconds: (clock() - t0) / 1e3,
    budgetS,
    timer: timing ? { method: timing.timer.method, check: timing.check ?? noCheck } : null,
  };
}

/** An injected timer is not checked. */
const noCheck: TimerCheck = { ok: true, reps: 0, once: 0, twice: 0, ratio: 2 };

/** Samples the live candidates and picks the fastest that passes the reference check (null: none). */
async function decide(
  key: string,
  job: TuneJob,
  candidates: string[],
  fallback: string,
  timer: KernelTimer,
  runner: Runner,
  rejected: Record<string, string>,
  o: { minSamples: number; maxSamples: number },
): Promise<TuneResult | null> {
  const stat = timer.statistic === "min" ? (xs: number[]) => Math.min(...xs) : median;
  const samples: Record<string, number[]> = {}, reps: Record<string, number> = {};
  let live = candidates;
  // A sample of one warm run sizes each candidate's samples. One run may be below the timer's noise, so
  // it drops only a candidate 6× slower than the best so far (and than the noise); the first round of
  // sized samples drops one 4× slower than the best there. A candidate's very first run (the first
  // candidate's was in the warm-up) is cold (a software adapter compiles the shader at its first
  // dispatch): it drops only one 30× slower, else a warm run follows.
  let best = Infinity;
  const timed: string[] = [], alive: string[] = [];
  for (const v of live) {
    try {
      const bar = 6 * Math.max(best, timer.noiseMs);
      const first = await timer.sample(() => runner.run(v), 1, v);
      const cold = v !== live[0] && first <= 5 * bar;
      const est = cold ? await timer.sample(() => runner.run(v), 1, v) : first;
      samples[v] = [est];
      timed.push(v);
      if (est <= bar) alive.push(v);
      best = Math.min(best, est);
    } catch (e) {
      rejected[v] = `failed to run: ${(e as Error).message}`;
    }
  }
  live = timed;
  if (!alive.length) return null;
  for (const v of alive) {
    reps[v] = repsFor(timer, samples[v][0]);
    samples[v] = [];
  }
  // rounds over the survivors, interleaved, until every rival's fastest sample is slower than the
  // best's slowest (a rival so separated leaves the rounds)
  let racing = [...alive];
  for (let round = 0; round < o.maxSamples && racing.length > 0; round++) {
    for (const v of racing) samples[v].push((await timer.sample(() => runner.run(v), reps[v], v)) / reps[v]);
    if (round === 0) {
      const b0 = Math.min(...racing.map((v) => samples[v][0]));
      racing = racing.filter((v) => samples[v][0] <= 4 * b0);
    }
    if (round + 1 < o.minSamples) continue;
    const lead = racing.reduce((a, b) => (stat(samples[b]) < stat(samples[a]) ? b : a));
    const top = Math.max(...samples[lead]);
    racing = racing.filter((v) => v === lead || Math.min(...samples[v]) <= top);
    if (racing.length === 1) break;
  }
  const ms: Record<string, number> = {},
    spread: Record<string, number> = {},
    count: Record<string, number> = {};
  for (const v of live) {
    const xs = samples[v];
    ms[v] = stat(xs);
    spread[v] = ms[v] > 0 ? (Math.max(...xs) - Math.min(...xs)) / ms[v] : 0;
    count[v] = alive.includes(v) ? xs.length : 1;
  }
  // the fastest that matches the reference wins (dropped candidates never do)
  const ranked = [...alive].sort((a, b) => ms[a] - ms[b] || live.indexOf(a) - live.indexOf(b));
  let winner: string | null = null;
  for (const v of ranked) {
    const bad = await checkCandidate(key, job, v);
    if (bad === null) {
      winner = v;
      break;
    }
    rejected[v] = `does not match the CPU reference: ${bad}`;
  }
  if (!winner) return null;
  const rivals = Object.keys(ms).filter((v) => v !== winner && !rejected[v]).sort((a, b) => ms[a] - ms[b]);
  const runnerUp = rivals[0] ?? null;
  return {
    key,
    winner,
    fallback,
    ms,
    spread,
    samples: count,
    margin: runnerUp ? ms[runnerUp] / ms[winner] - 1 : Infinity,
    runnerUp,
    rejected: { ...rejected },
    compileMs: 0,
  };
}
