// Autotune's timers: how long `reps` runs of a kernel take on the device, not on the host.
//
// * gpu-timestamp: where the device has `timestamp-query` (kernels/runtime.ts requests it), the runs are
//   bracketed by two timestamp writes in one command buffer, so the figure is the device's time only. A
//   device that writes zeros (some software adapters) is detected by `timestampTimer`, which then
//   declines.
// * wall-difference: else `reps` runs and `2·reps` runs are each recorded first and then submitted as
//   one command buffer and waited for; the difference of the two waits is the time of `reps` runs, since
//   the wait's floor (10–14 ms here on lavapipe: the runtime polls the device) is in both and cancels.
//
// Recording is never timed. `calibrate` checks a timer against a known cost (2R runs must read twice R
// runs) before autotune decides by it.

import { currentEncoder, flush, gpu, sync } from "./runtime.ts";

export type TimerMethod = "gpu-timestamp" | "wall-difference";

/** A timer of recorded GPU work. */
export interface KernelTimer {
  method: TimerMethod | string;
  /** A sample worth timing lasts at least this long (ms): shorter ones are below the timer's noise. */
  targetMs: number;
  /**
   * How a candidate's samples make its time: "min" where noise only adds (timestamps: preemption, clock
   * ramps), "median" where it goes both ways (a difference of two waits).
   */
  statistic: "min" | "median";
  /** How far one sample may be off (ms): an estimate below it says only "short". */
  noiseMs: number;
  /** The milliseconds `reps` runs of `run` take (`variant` names what runs; fake timers use it). */
  sample(run: () => void, reps: number, variant: string): Promise<number>;
}

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A timer by timestamp queries around the runs, or null where the device has none. */
export function timestampTimer(): KernelTimer | null {
  const { device, features } = gpu();
  if (!features.timestampQuery) return null;
  const qs = device.createQuerySet({ type: "timestamp", count: 2 });
  const resolve = device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  return {
    method: "gpu-timestamp",
    targetMs: 2,
    // the median: lavapipe's timestamps also read short now and then, so the fastest sample is not safe
    statistic: "median",
    noiseMs: 0.01,
    async sample(run, reps) {
      await sync();
      currentEncoder().beginComputePass({
        label: "autotune-begin",
        timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0 },
      }).end();
      for (let i = 0; i < reps; i++) run();
      const enc = currentEncoder();
      enc.beginComputePass({
        label: "autotune-end",
        timestampWrites: { querySet: qs, endOfPassWriteIndex: 1 },
      })
        .end();
      enc.resolveQuerySet(qs, 0, 2, resolve, 0);
      enc.copyBufferToBuffer(resolve, 0, read, 0, 16);
      flush();
      await read.mapAsync(GPUMapMode.READ);
      const t = new BigUint64Array(read.getMappedRange().slice(0));
      read.unmap();
      // a device that writes no timestamps leaves zeros (or an end before the begin): no time at all
      return t[0] === 0n || t[1] <= t[0] ? 0 : Number(t[1] - t[0]) / 1e6;
    },
  };
}

/** Milliseconds from submitting what is recorded to the device being done with it. */
async function submitAndWait(): Promise<number> {
  const t0 = performance.now();
  flush();
  await gpu().device.queue.onSubmittedWorkDone();
  return performance.now() - t0;
}

/**
 * A timer by the difference of two submits (reps and 2·reps runs), whose wait floor cancels; its target
 * sample length is ten times the spread of an empty submit's wait (at least 20 ms).
 */
export async function wallDifferenceTimer(): Promise<KernelTimer> {
  await sync();
  const empty: number[] = [];
  for (let i = 0; i < 7; i++) {
    currentEncoder(); // an empty command buffer: the floor alone
    empty.push(await submitAndWait());
  }
  const spread = Math.max(...empty) - Math.min(...empty);
  return {
    method: "wall-difference",
    targetMs: Math.max(20, 10 * spread),
    statistic: "median",
    noiseMs: Math.max(1, spread),
    async sample(run, reps) {
      await sync();
      for (let i = 0; i < reps; i++) run();
      const once = await submitAndWait();
      for (let i = 0; i < 2 * reps; i++) run();
      const twice = await submitAndWait();
      return Math.max(0, twice - once);
    },
  };
}

/** The outcome of checking a timer against a known cost. */
export interface TimerCheck {
  ok: boolean;
  /** Runs per sample. */
  reps: number;
  /** Ms of `reps` runs and of `2·reps` runs (the timer's statistic over five samples of each). */
  once: number;
  twice: number;
  /** twice / once: 2 where the timer measures the kernel. */
  ratio: number;
}

/** How far from 2 the ratio of 2R to R runs may be for a timer to pass (±15 %). */
const CHECK_LO = 1.7, CHECK_HI = 2.3;

/**
 * Checks `timer` on `run` (a kernel already compiled and warm): R runs and 2R runs, five samples of each
 * interleaved, must read a ratio of 2 ± 15 % (R sized so a sample lasts the timer's target).
 */
export async function calibrate(timer: KernelTimer, run: () => void, variant: string): Promise<TimerCheck> {
  const est = await timer.sample(run, 1, variant);
  const reps = repsFor(timer, est);
  const once: number[] = [], twice: number[] = [];
  for (let i = 0; i < 5; i++) {
    once.push(await timer.sample(run, reps, variant));
    twice.push(await timer.sample(run, 2 * reps, variant));
  }
  const stat = timer.statistic === "min" ? (xs: number[]) => Math.min(...xs) : median;
  const o = stat(once), t = stat(twice);
  const ratio = o > 0 ? t / o : 0;
  return { ok: est > 0 && ratio >= CHECK_LO && ratio <= CHECK_HI, reps, once: o, twice: t, ratio };
}

/** Most runs in one sample. */
const MAX_REPS = 256;

/**
 * Runs per sample so that a sample of a kernel of `estMs` per run lasts the timer's target (an estimate
 * below the timer's noise counts as the noise: it says only that the kernel is short).
 */
export function repsFor(timer: KernelTimer, estMs: number): number {
  const est = Math.max(estMs > 0 ? estMs : 0, timer.noiseMs);
  if (!(est > 0)) return MAX_REPS;
  return Math.max(1, Math.min(MAX_REPS, Math.ceil(timer.targetMs / est)));
}
