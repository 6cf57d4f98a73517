// Timing of GPU work recorded through the engine's runtime.
//
// * `measure(fn)` times one recorded unit of work (a kernel launch, an op, a training step). With the
//   adapter's `timestamp-query` feature (requested on the device by kernels/runtime.ts) it brackets a
//   batch of calls with two timestamp writes in the same command buffer, so the figure is GPU time
//   only; without it, wall time around the batch with one `onSubmittedWorkDone`. It warms up first
//   (pipeline compilation, first touches of pooled memory), sizes the batch so a sample lasts long
//   enough to be measured, and reports the median and spread of several samples.
// * `PassProfiler` records a timestamp pair on every compute pass encoded while it is active, so a
//   whole training step can be broken down into its kernels (labelled by pipeline name).

import { currentEncoder, flush, gpu, sync } from "../kernels/runtime.ts";

export type TimingMethod = "gpu-timestamp" | "wall";

/** Per-call time of a measured unit of work. */
export interface Stats {
  /** Median over the samples of the per-call time, milliseconds. */
  medianMs: number;
  /** The per-call time of every sample, ms. */
  samplesMs?: number[];
  minMs: number;
  maxMs: number;
  /** (max − min) / median, in percent. */
  spreadPct: number;
  /** Number of samples. */
  runs: number;
  /** Calls per sample. */
  inner: number;
  method: TimingMethod;
}

export interface MeasureOptions {
  /** Calls before measuring (compile pipelines, touch memory). Default 1. */
  warmup?: number;
  /** Samples. Default 5. */
  runs?: number;
  /** Each sample repeats the call until it lasts about this long (ms). Default 30. */
  minSampleMs?: number;
  /** Upper bound on calls per sample. Default 64. */
  maxInner?: number;
  /** "auto" uses GPU timestamps when the device has them. */
  method?: "auto" | TimingMethod;
}

/** The timing method `measure` uses on this device with these options. */
export function timingMethod(opt: MeasureOptions["method"] = "auto"): TimingMethod {
  if (opt === "wall") return "wall";
  const has = gpu().features.timestampQuery;
  if (opt === "gpu-timestamp" && !has) throw new Error("This device has no timestamp-query feature");
  return has ? "gpu-timestamp" : "wall";
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Reusable query set and buffers for bracketing a batch with two timestamps. */
class Bracket {
  private qs: GPUQuerySet;
  private resolve: GPUBuffer;
  private read: GPUBuffer;
  constructor(private device: GPUDevice) {
    this.qs = device.createQuerySet({ type: "timestamp", count: 2 });
    this.resolve = device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    this.read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  }
  begin(): void {
    currentEncoder().beginComputePass({
      label: "bench-ts-begin",
      timestampWrites: { querySet: this.qs, beginningOfPassWriteIndex: 0 },
    }).end();
  }
  /** Writes the end timestamp, submits, and returns the elapsed GPU time in ms. */
  async end(): Promise<number> {
    const enc = currentEncoder();
    enc.beginComputePass({
      label: "bench-ts-end",
      timestampWrites: { querySet: this.qs, endOfPassWriteIndex: 1 },
    }).end();
    enc.resolveQuerySet(this.qs, 0, 2, this.resolve, 0);
    enc.copyBufferToBuffer(this.resolve, 0, this.read, 0, 16);
    flush();
    await this.read.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(this.read.getMappedRange().slice(0));
    this.read.unmap();
    return Number(t[1] - t[0]) / 1e6;
  }
}

let bracket: Bracket | null = null;

/** Time of `inner` calls of `fn` (ms), by the given method. */
async function sample(fn: () => void, inner: number, method: TimingMethod): Promise<number> {
  if (method === "gpu-timestamp") {
    await sync();
    bracket ??= new Bracket(gpu().device);
    bracket.begin();
    for (let i = 0; i < inner; i++) fn();
    return await bracket.end();
  }
  await sync();
  const t0 = performance.now();
  for (let i = 0; i < inner; i++) fn();
  await sync();
  return performance.now() - t0;
}

/**
 * Measures `fn`, which records GPU work through the runtime (and frees what it allocates, e.g. by
 * running inside `scope`). Returns per-call statistics.
 */
export async function measure(fn: () => void, opts: MeasureOptions = {}): Promise<Stats> {
  const { warmup = 1, runs = 5, minSampleMs = 30, maxInner = 64 } = opts;
  const method = timingMethod(opts.method);
  let single = Infinity;
  for (let w = 0; w < Math.max(1, warmup); w++) single = await sample(fn, 1, method);
  // a second, warm single call gives the batch size
  if (warmup > 0 && single < minSampleMs) single = Math.min(single, await sample(fn, 1, method));
  const inner = Math.max(1, Math.min(maxInner, Math.ceil(minSampleMs / Math.max(single, 1e-3))));
  const per: number[] = [];
  for (let r = 0; r < Math.max(1, runs); r++) per.push((await sample(fn, inner, method)) / inner);
  return summarize(per, inner, method);
}

/** Median, extremes and spread of per-call times. */
function summarize(per: number[], inner: number, method: TimingMethod): Stats {
  const med = median(per), lo = Math.min(...per), hi = Math.max(...per);
  return {
    medianMs: med,
    samplesMs: per,
    minMs: lo,
    maxMs: hi,
    spreadPct: med > 0 ? ((hi - lo) / med) * 100 : 0,
    runs: per.length,
    inner,
    method,
  };
}

/** Wall time of an async unit of work (e.g. a training step that reads its loss back), per call. */
export async function measureAsync(
  fn: () => Promise<void>,
  opts: { warmup?: number; runs?: number } = {},
): Promise<Stats> {
  const { warmup = 1, runs = 3 } = opts;
  for (let w = 0; w < warmup; w++) {
    await fn();
    await sync();
  }
  const per: number[] = [];
  for (let r = 0; r < Math.max(1, runs); r++) {
    await sync();
    const t0 = performance.now();
    await fn();
    await sync();
    per.push(performance.now() - t0);
  }
  return summarize(per, 1, "wall");
}

// ---------------------------------------------------------------- per-pass profiler

/** GPU time per kernel (pipeline label) over the passes recorded while a profiler was active. */
export interface PassProfile {
  /** Sum of every pass's GPU time, ms. */
  totalMs: number;
  passes: number;
  byKernel: { label: string; calls: number; ms: number }[];
}

const QUERIES_PER_SET = 4096;
let activeProfiler: PassProfiler | null = null;
let patched = false;

/**
 * Adds a timestamp pair to every compute pass begun while active (by wrapping
 * `GPUCommandEncoder.prototype.beginComputePass`). Needs `timestamp-query`.
 */
export class PassProfiler {
  private sets: GPUQuerySet[] = [];
  private labels: string[] = [];
  private used = 0;

  static available(): boolean {
    return gpu().features.timestampQuery;
  }

  start(): void {
    if (!PassProfiler.available()) throw new Error("PassProfiler needs the timestamp-query feature");
    if (activeProfiler) throw new Error("Another PassProfiler is active");
    patchEncoder();
    activeProfiler = this;
  }

  /** Slot for a new pass: the query set and first index of its pair. */
  next(label: string): { querySet: GPUQuerySet; index: number } {
    const perSet = QUERIES_PER_SET / 2;
    if (this.labels.length >= this.sets.length * perSet) {
      this.sets.push(gpu().device.createQuerySet({ type: "timestamp", count: QUERIES_PER_SET }));
    }
    const k = this.labels.length;
    this.labels.push(label);
    this.used++;
    return { querySet: this.sets[Math.floor(k / perSet)], index: (k % perSet) * 2 };
  }

  /** Stops recording, waits for the GPU, and returns the per-kernel times. */
  async stop(): Promise<PassProfile> {
    activeProfiler = null;
    flush();
    const { device } = gpu();
    const n = this.labels.length;
    const times = new Float64Array(n);
    const perSet = QUERIES_PER_SET / 2;
    for (let s = 0; s < this.sets.length; s++) {
      const count = Math.min(perSet, n - s * perSet) * 2;
      const bytes = count * 8;
      const res = device.createBuffer({
        size: bytes,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      const rd = device.createBuffer({
        size: bytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      const enc = device.createCommandEncoder();
      enc.resolveQuerySet(this.sets[s], 0, count, res, 0);
      enc.copyBufferToBuffer(res, 0, rd, 0, bytes);
      device.queue.submit([enc.finish()]);
      await rd.mapAsync(GPUMapMode.READ);
      const t = new BigUint64Array(rd.getMappedRange().slice(0));
      rd.unmap();
      for (let i = 0; i < count / 2; i++) times[s * perSet + i] = Number(t[2 * i + 1] - t[2 * i]) / 1e6;
      res.destroy();
      rd.destroy();
      this.sets[s].destroy();
    }
    const by = new Map<string, { label: string; calls: number; ms: number }>();
    let total = 0;
    for (let i = 0; i < n; i++) {
      const label = this.labels[i];
      const e = by.get(label) ?? { label, calls: 0, ms: 0 };
      e.calls++;
      e.ms += times[i];
      by.set(label, e);
      total += times[i];
    }
    return { totalMs: total, passes: n, byKernel: [...by.values()].sort((a, b) => b.ms - a.ms) };
  }
}

function patchEncoder(): void {
  if (patched) return;
  patched = true;
  const proto = GPUCommandEncoder.prototype;
  const orig = proto.beginComputePass;
  proto.beginComputePass = function (this: GPUCommandEncoder, desc?: GPUComputePassDescriptor) {
    if (activeProfiler && !desc?.timestampWrites) {
      const { querySet, index } = activeProfiler.next(desc?.label ?? "?");
      desc = {
        ...desc,
        timestampWrites: { querySet, beginningOfPassWriteIndex: index, endOfPassWriteIndex: index + 1 },
      };
    }
    return orig.call(this, desc);
  };
}
