// Whole training steps (the trainer's, training/step.ts): forward + cross-entropy + backward + AdamW on a
// random batch, per stage.
// Wall time per step (recorded, submitted and waited for), images/s, GPU memory, and, with
// timestamp queries, the sum of the step's kernel times from a per-pass profile: the difference is
// the overhead of recording, dispatch, allocation and synchronisation.

import { Rng } from "../autograd/random.ts";
import { randn, tensor } from "../autograd/tensor.ts";
import { buildModel, type ModelOptions } from "../models/zoo.ts";
import { operandTextureBytes } from "../kernels/texture_operand.ts";
import { commandStats, poolStats, setPassPerDispatch, sync, trimPool } from "../kernels/runtime.ts";
import { AdamW } from "../nn/optim.ts";
import { autotune } from "../kernels/autotune.ts";
import { autotuneEnabled } from "../kernels/planner.ts";
import { replayEnabled, setReplay, trainStep } from "../training/step.ts";
import { measureAsync, type PassProfile, PassProfiler, type Stats } from "./timing.ts";

export interface StepCase {
  /** Label, e.g. "final" or "final narrow". */
  name: string;
  stage: string;
  batch: number;
  model?: ModelOptions;
}

export interface StepRow {
  name: string;
  stage: string;
  batch: number;
  params: number;
  /** Forward FLOPs per image (convolutions and linear layers); a step is about 3× this. */
  forwardFlopsPerImage: number;
  timing: Stats;
  imagesPerSec: number;
  /** Achieved GFLOP/s over the step, counting 3 × forward FLOPs. */
  gflops: number;
  /** GPU memory: pooled buffers the step allocated (activations, gradients, temporaries), and
   * parameters + gradients + AdamW moments (four f32 arenas). */
  poolBytes: number;
  paramBytes: number;
  /** GEMM operand textures (kernels/texture_operand.ts; allocated once, reused). */
  textureBytes: number;
  /** Sum of the step's kernel GPU times (timestamp per pass), ms; null without timestamp queries. */
  kernelMs: number | null;
  /** Wall time of the profiled step (recorded, submitted, waited for), ms. */
  profiledWallMs: number | null;
  /** (profiled step wall − kernels) / kernels, percent: recording, dispatch, allocation, sync. */
  overheadPct: number | null;
  passes: number | null;
  /** Median host time to issue one replayed step (training/step.ts replay; nothing submitted), ms. */
  hostMs: number;
  /** Median host time to record one step eagerly (forward to the end of opt.step()), ms. */
  hostEagerMs: number;
  /** Wall time per step with every step eager (`setReplay(false)`), beside `timing` (replayed). */
  eagerTiming: Stats;
  /** Dispatches recorded per step. */
  dispatches: number;
  /** The slowest kernels of the profiled step. */
  topKernels: PassProfile["byKernel"];
}

/** The narrow `final` variant of the seed (305,690 parameters). */
export const NARROW: ModelOptions = { widths: [16, 32, 64, 128], depths: [1, 1, 3, 1], stemFeatures: 16 };

export interface StepBenchOptions {
  warmup: number;
  runs: number;
  log?: (line: string) => void;
}

/** A case's model, AdamW and a random batch, and `step()` recording one training step on them. */
export interface PreparedStep {
  step: () => void;
  params: number;
  forwardFlopsPerImage: number;
  dispose: () => void;
}

export function prepareStep(c: StepCase): PreparedStep {
  const model = buildModel(c.stage, { seed: 1, ...c.model });
  model.train();
  const params = model.parameters();
  const opt = new AdamW(params, { lr: 0.004, weightDecay: 0.05 });
  const x = randn([c.batch, 3, 32, 32], new Rng(7));
  // the targets live on the GPU, so recording a step uploads (and so submits) nothing
  const labels = tensor(Int32Array.from({ length: c.batch }, (_, i) => i % 10), [c.batch]);
  return {
    // the trainer's step (training/step.ts), without the metric sums
    step: () => trainStep({ model, optimizer: opt }, { x, y: labels }),
    params: params.reduce((a, p) => a + p.size, 0),
    forwardFlopsPerImage: model.flops([1, 3, 32, 32]),
    dispose: () => {
      x.dispose();
      labels.dispose();
      opt.dispose();
      model.dispose();
    },
  };
}

/**
 * Host time to record (or replay) one step, nothing submitted: the median of `runs`, and the dispatches
 * of a step.
 */
async function hostTimes(p: PreparedStep, name: string, runs: number) {
  const host: number[] = [];
  let dispatches = 0;
  for (let r = 0; r < runs; r++) {
    await sync();
    const before = commandStats().submits;
    const t0 = performance.now();
    p.step();
    host.push(performance.now() - t0);
    const after = commandStats();
    if (after.submits !== before) throw new Error(`bench ${name}: recording a step submitted work`);
    dispatches = after.pendingDispatches;
  }
  await sync();
  host.sort((a, b) => a - b);
  return { medianMs: host[Math.floor(host.length / 2)], dispatches };
}

/** Wall time of `runs` training steps of a prepared case (each submitted and waited for). */
export function timeSteps(p: PreparedStep, warmup: number, runs: number): Promise<Stats> {
  return measureAsync(async () => {
    p.step();
    await sync();
  }, { warmup, runs });
}

export async function benchStep(c: StepCase, opts: StepBenchOptions): Promise<StepRow> {
  const prepared = prepareStep(c);
  trimPool(); // count only what this step allocates from here on
  const poolBefore = poolStats().bytesAllocated;
  const { step, params: nParams, forwardFlopsPerImage: fwdFlops } = prepared;
  if (autotuneEnabled()) {
    step(); // meets every shape of the step, so autotune can time their candidates
    await sync();
    await autotune({ log: opts.log });
  }
  // eager steps, then replayed ones (the trainer's), alternately measured the same way
  const replay = replayEnabled();
  setReplay(false);
  const eagerTiming = await timeSteps(prepared, opts.warmup, opts.runs);
  const eagerHost = await hostTimes(prepared, c.name, Math.max(3, opts.runs));
  setReplay(replay);
  const timing = await timeSteps(prepared, opts.warmup, opts.runs);
  const pool = poolStats();
  const replayedHost = await hostTimes(prepared, c.name, Math.max(3, opts.runs));
  const dispatches = eagerHost.dispatches;
  const hostMs = replayedHost.medianMs, hostEagerMs = eagerHost.medianMs;
  let profiledWallMs: number | null = null;
  let kernelMs: number | null = null, overheadPct: number | null = null, passes: number | null = null;
  let top: PassProfile["byKernel"] = [];
  if (PassProfiler.available()) {
    // the profiled step is timed on its own: wall and kernel sum under the same conditions
    await sync();
    const prof = new PassProfiler();
    const t0 = performance.now();
    setPassPerDispatch(true); // the profiler times passes
    prof.start();
    step();
    const p = await prof.stop();
    setPassPerDispatch(false);
    profiledWallMs = performance.now() - t0;
    kernelMs = p.totalMs;
    passes = p.passes;
    overheadPct = ((profiledWallMs - kernelMs) / kernelMs) * 100;
    top = p.byKernel.slice(0, 8);
  }
  prepared.dispose();
  const s = timing.medianMs / 1e3;
  const row: StepRow = {
    name: c.name,
    stage: c.stage,
    batch: c.batch,
    params: nParams,
    forwardFlopsPerImage: fwdFlops,
    timing,
    imagesPerSec: c.batch / s,
    gflops: (3 * fwdFlops * c.batch) / s / 1e9,
    poolBytes: pool.bytesAllocated - poolBefore,
    paramBytes: 4 * 4 * nParams,
    textureBytes: operandTextureBytes(),
    kernelMs,
    profiledWallMs,
    overheadPct,
    passes,
    hostMs,
    hostEagerMs,
    eagerTiming,
    dispatches,
    topKernels: top,
  };
  const us = (ms: number) => ((ms * 1e3) / dispatches).toFixed(1);
  opts.log?.(
    `  ${c.name} batch ${c.batch}: ${timing.medianMs.toFixed(1)} ms/step replayed, ${
      eagerTiming.medianMs.toFixed(1)
    } eager, ${row.imagesPerSec.toFixed(1)} img/s` +
      `, host ${hostEagerMs.toFixed(2)} ms eager / ${
        hostMs.toFixed(2)
      } ms replayed for ${dispatches} dispatches (${us(hostEagerMs)} / ${us(hostMs)} µs each)` +
      (kernelMs !== null ? `, kernels ${kernelMs.toFixed(1)} ms (${passes} passes)` : ""),
  );
  return row;
}
