// Autotune: where several variants can run a shape, time each at first use and keep the fastest, as
// Burn/CubeCL's autotune does. Recording a step is synchronous and timing is not, so the planner
// queues the shapes it meets without a winner (while autotune is on) and `autotune()` times them
// afterwards on scratch buffers; the trainer does this once before its first step, on a dry run of
// one step, so every real step of a run uses the same kernels. Winners go to a store (the host keeps
// it on disk per adapter and runtime version) so later processes start with them.

import { acquireBuffer, releaseBuffer, sync } from "./runtime.ts";
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
} from "./planner.ts";
import type { ConvShape, MatmulDims } from "./shapes.ts";

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

export interface TuneResult {
  key: string;
  winner: string;
  /** What the profile would have run. */
  fallback: string;
  /** Median milliseconds of each candidate. */
  ms: Record<string, number>;
}

function convRunner(s: ConvShape, pass: "forward" | "inputGrad" | "weightGrad", epilogue?: ConvEpilogue) {
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

function matmulRunner(d: MatmulDims) {
  const aN = (d.batchA ? d.batch : 1) * d.m * d.k, bN = (d.batchB ? d.batch : 1) * d.k * d.n;
  const cN = (d.sumBatch ? 1 : d.batch) * d.m * d.n;
  const bufs = [aN, bN, cN].map((n) => acquireBuffer(n * 4));
  return {
    run: (variant: string) => matmul(bufs[0], bufs[1], bufs[2], d, { variant }),
    free: () => bufs.forEach(releaseBuffer),
  };
}

async function timeOnce(run: () => void): Promise<number> {
  const t0 = performance.now();
  run();
  await sync();
  return performance.now() - t0;
}

/**
 * Times the candidates of every queued shape (one warm-up run that also compiles, then `reps` timed
 * runs; a candidate 3× slower than the best so far after one run is dropped: a GEMM built for
 * another class of adapter can be 70× slower than the default) and records the winners.
 */
export async function autotune(
  opts: {
    reps?: number;
    log?: (line: string) => void;
    /** Called before the first shape and after each: shapes done of all queued. */
    progress?: (done: number, total: number) => void;
  } = {},
): Promise<TuneResult[]> {
  const reps = opts.reps ?? 3;
  const results: TuneResult[] = [];
  const jobs = pendingTunes();
  opts.progress?.(0, jobs.length);
  for (const [i, [key, job]] of jobs.entries()) {
    if (i > 0) opts.progress?.(i, jobs.length);
    const fallback = job.op === "conv" ? defaultConvVariant(job.s, job.pass) : defaultMatmulVariant(job.d);
    // the profile's default first: the likely winner, so that slow candidates are dropped after one run
    const cands = tuneCandidates(job.op === "conv" ? convVariants(job.s, job.pass) : matmulVariants(job.d));
    const vars = [...cands].sort((a, b) => Number(b === fallback) - Number(a === fallback));
    if (vars.length < 2) {
      recordWinner(key, vars[0], cands);
      continue;
    }
    const runner = job.op === "conv" ? convRunner(job.s, job.pass, job.epilogue) : matmulRunner(job.d);
    const ms: Record<string, number> = {};
    let best = Infinity;
    try {
      for (const v of vars) {
        await timeOnce(() => runner.run(v));
        const times = [await timeOnce(() => runner.run(v))];
        if (times[0] < 3 * best) {
          for (let r = 1; r < reps; r++) times.push(await timeOnce(() => runner.run(v)));
        }
        times.sort((a, b) => a - b);
        ms[v] = times[Math.floor(times.length / 2)];
        best = Math.min(best, ms[v]);
      }
    } finally {
      runner.free();
    }
    const winner = Object.entries(ms).sort((a, b) => a[1] - b[1])[0][0];
    recordWinner(key, winner, cands);
    results.push({ key, winner, fallback, ms });
    opts.log?.(
      `autotune ${key}: ${winner} (${
        Object.entries(ms).map(([v, t]) => `${v} ${t.toFixed(2)} ms`).join(", ")
      })`,
    );
  }
  if (jobs.length) opts.progress?.(jobs.length, jobs.length);
  if (results.length) store?.save(tunedWinners());
  return results;
}
