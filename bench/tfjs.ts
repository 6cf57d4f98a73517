// Side by side with TensorFlow.js's WebGPU backend on the same adapter, in the same process (it
// requests its own device). Loaded only by `deno task bench --compare tfjs` (bench/main.ts imports
// this file dynamically), so TensorFlow.js stays out of the library's import graph.
//
// Both sides are timed on the GPU: ours with a timestamp pair around a batch of calls (bench/timing.ts),
// TensorFlow.js with `tf.time()`, which sums its own per-program timestamp queries (`kernelMs`). Where
// the adapter has no timestamp-query, both fall back to wall time around calls plus one sync.
// TensorFlow.js runs channels-last (NHWC, HWIO filters), its native layout; ours NCHW/OIHW.

import type * as TF from "@tensorflow/tfjs-core";
import { conv2d } from "../autograd/ops/conv.ts";
import { Rng } from "../autograd/random.ts";
import { noGrad, randn, scope, type Tensor } from "../autograd/tensor.ts";
import { matmul } from "../kernels/matmul.ts";
import { acquireBuffer, releaseBuffer } from "../kernels/runtime.ts";
import { conv1x1Gemms } from "./kernels.ts";
import { measure, type MeasureOptions, median } from "./timing.ts";

type Tf = typeof TF;

export interface TfjsInfo {
  version: string;
  backend: string;
  timestampQuery: boolean;
}

export interface CompareRow {
  op: string;
  shape: string;
  pass: string;
  flops: number;
  tfjsMs: number;
  tfjsMethod: string;
  /** Our implementation, e.g. "kernels/matmul.ts" or "conv2d". */
  impl: string;
  oursMs: number;
  oursMethod: string;
  /** tfjsMs / oursMs: how many times faster ours is. */
  speedup: number;
  /** The target for this row, when it has one. */
  target: number | null;
}

let tfMod: Tf | null = null;

/** Imports TensorFlow.js and its WebGPU backend and selects it; throws with the reason if it cannot. */
export async function loadTfjs(): Promise<{ tf: Tf; info: TfjsInfo }> {
  if (!tfMod) {
    const tf = await import("@tensorflow/tfjs-core");
    await import("@tensorflow/tfjs-backend-webgpu");
    const ok = await tf.setBackend("webgpu");
    if (!ok) throw new Error("TensorFlow.js could not initialise its webgpu backend on this adapter");
    await tf.ready();
    tfMod = tf;
  }
  const tf = tfMod;
  const be = tf.backend() as unknown as { supportTimestampQuery?: boolean };
  return {
    tf,
    info: { version: tf.version_core, backend: tf.getBackend(), timestampQuery: !!be.supportTimestampQuery },
  };
}

/** A median per-call time and how it was taken. */
type Timed = { ms: number; method: string };

/** Median per-call time of a TensorFlow.js op (GPU kernel time when it has timestamps). */
async function timeTf(
  tf: Tf,
  make: () => TF.Tensor,
  runs: number,
  timestampQuery: boolean,
): Promise<Timed> {
  const once = async () => {
    if (timestampQuery) {
      const info = await tf.time(() => make().dispose());
      return info.kernelMs as number;
    }
    const t0 = performance.now();
    const y = make();
    await y.data();
    y.dispose();
    return performance.now() - t0;
  };
  await once(); // compile and upload
  const xs: number[] = [];
  for (let r = 0; r < runs; r++) xs.push(await once());
  return {
    ms: median(xs),
    method: timestampQuery ? "gpu-timestamp (tf.time kernelMs)" : "wall (incl. read-back)",
  };
}

/** Our conv2d pass on NCHW tensors, per call. */
async function timeOursConv(
  xShape: number[],
  wShape: number[],
  conv: { stride: number; padding: number; groups: number },
  pass: string,
  timing: MeasureOptions,
  rng: Rng,
): Promise<Timed> {
  const x = randn(xShape, rng), w = randn(wShape, rng, { std: 0.1 });
  let y: Tensor | null = null, g: Tensor | null = null;
  try {
    let fn: () => void;
    if (pass === "forward") {
      fn = () => scope(() => void noGrad(() => conv2d(x, w, null, conv)));
    } else {
      x.requiresGrad = pass === "backward (input)";
      w.requiresGrad = !x.requiresGrad;
      y = conv2d(x, w, null, conv);
      g = randn(y.shape, rng);
      const node = y.node!, gg = g;
      fn = () => scope(() => void node.backward(gg));
    }
    const s = await measure(fn, timing);
    return { ms: s.medianMs, method: s.method };
  } finally {
    y?.dispose();
    g?.dispose();
    x.dispose();
    w.dispose();
  }
}

export interface CompareOptions {
  batch: number;
  runs: number;
  timing: MeasureOptions;
  filter?: (name: string) => boolean;
  log?: (line: string) => void;
}

const PASSES = ["forward", "backward (input)", "backward (weight)"];

/** Runs every comparison; returns the rows and TensorFlow.js's description. */
export async function compareTfjs(opts: CompareOptions): Promise<{ info: TfjsInfo; rows: CompareRow[] }> {
  const { tf, info } = await loadTfjs();
  const rows: CompareRow[] = [];
  const rng = new Rng(99);
  const B = opts.batch;
  const push = (r: CompareRow) => {
    rows.push(r);
    opts.log?.(
      `  ${r.op} ${r.pass} [${r.impl}]: tfjs ${r.tfjsMs.toFixed(2)} ms, ours ${r.oursMs.toFixed(2)} ms, ×${
        r.speedup.toFixed(2)
      }`,
    );
  };
  /** One row: TensorFlow.js's time `t` against ours `o` (through `impl`) on `w`. */
  const pushTimed = (
    w: { op: string; shape: string; pass: string; flops: number },
    t: Timed,
    impl: string,
    o: Timed,
    target: number | null,
  ) =>
    push({
      ...w,
      tfjsMs: t.ms,
      tfjsMethod: t.method,
      impl,
      oursMs: o.ms,
      oursMethod: o.method,
      speedup: t.ms / o.ms,
      target,
    });
  const want = (name: string) => !opts.filter || opts.filter(name);
  const randT = (shape: number[], std = 1) => tf.randomNormal(shape, 0, std);

  // 1×1 convolutions of `final` as GEMMs over the N·H·W pixels
  const gemms: [number, number, number][] = [
    [32, 64, 256],
    [32, 256, 64],
    [16, 128, 512],
    [16, 512, 128],
    [8, 256, 1024],
    [8, 1024, 256],
    [4, 512, 2048],
    [4, 2048, 512],
  ];
  for (const [hw, cin, cout] of gemms) {
    const op = `1×1 conv / GEMM ${cin}→${cout} @${hw}×${hw}`;
    if (!want(op)) continue;
    const P = B * hw * hw;
    for (const g of conv1x1Gemms(P, cin, cout)) {
      const d = g.d;
      const aShape = d.transA ? [d.k, d.m] : [d.m, d.k], bShape = d.transB ? [d.n, d.k] : [d.k, d.n];
      const ta = randT(aShape), tb = randT(bShape);
      const t = await timeTf(tf, () => tf.matMul(ta, tb, d.transA, d.transB), opts.runs, info.timestampQuery);
      ta.dispose();
      tb.dispose();
      const a = acquireBuffer(g.aN * 4), b = acquireBuffer(g.bN * 4), c = acquireBuffer(d.m * d.n * 4);
      const s = await measure(() => matmul(a, b, c, d), opts.timing);
      releaseBuffer(a);
      releaseBuffer(b);
      releaseBuffer(c);
      const flops = 2 * d.m * d.n * d.k;
      const shape = `${d.m}×${d.k}×${d.n}`;
      pushTimed({ op, shape, pass: g.pass, flops }, t, "kernels/matmul.ts", {
        ms: s.medianMs,
        method: s.method,
      }, 2);
      // the same layer through our conv2d (NCHW, kernels/conv1x1.ts)
      const o = await timeOursConv(
        [B, cin, hw, hw],
        [cout, cin, 1, 1],
        { stride: 1, padding: 0, groups: 1 },
        g.pass,
        opts.timing,
        rng,
      );
      pushTimed({ op, shape: `x [${B},${cin},${hw},${hw}]`, pass: g.pass, flops }, t, "conv2d", o, 2);
    }
  }

  // depthwise 7×7 (stride 1, padding 3) of `final`, and dense 3×3 convolutions of `base`
  const convs: {
    op: string;
    c: number;
    o: number;
    hw: number;
    k: number;
    dw: boolean;
    target: number | null;
  }[] = [
    ...[[64, 32], [128, 16], [256, 8], [512, 4]].map(([c, hw]) => ({
      op: `depthwise 7×7 ${c} @${hw}×${hw}`,
      c,
      o: c,
      hw,
      k: 7,
      dw: true,
      target: 2,
    })),
    ...[[3, 64, 32], [16, 16, 32], [32, 32, 16], [64, 64, 8], [128, 128, 4]].map(([c, o, hw]) => ({
      op: `conv 3×3 ${c}→${o} @${hw}×${hw}`,
      c,
      o,
      hw,
      k: 3,
      dw: false,
      target: null,
    })),
  ];
  for (const cv of convs) {
    if (!want(cv.op)) continue;
    const pad = (cv.k - 1) / 2;
    const k = cv.k;
    const flops = 2 * B * cv.hw * cv.hw * cv.o * (cv.dw ? 1 : cv.c) * k * k;
    const xs = [B, cv.hw, cv.hw, cv.c];
    const ws = cv.dw ? [k, k, cv.c, 1] : [k, k, cv.c, cv.o];
    const ys = [B, cv.hw, cv.hw, cv.o];
    const x = randT(xs), w = randT(ws, 0.1), dy = randT(ys);
    for (const pass of PASSES) {
      const e = tf.engine();
      const make = (): TF.Tensor => {
        if (cv.dw) {
          if (pass === "forward") return tf.depthwiseConv2d(x as TF.Tensor4D, w as TF.Tensor4D, 1, pad);
          if (pass === "backward (input)") {
            return e.runKernel("DepthwiseConv2dNativeBackpropInput", { dy, filter: w }, {
              strides: 1,
              dilations: 1,
              pad,
              inputShape: xs,
            } as unknown as TF.NamedAttrMap) as TF.Tensor;
          }
          return e.runKernel("DepthwiseConv2dNativeBackpropFilter", { x, dy }, {
            strides: 1,
            dilations: 1,
            pad,
            filterShape: ws,
          } as unknown as TF.NamedAttrMap) as TF.Tensor;
        }
        if (pass === "forward") return tf.conv2d(x as TF.Tensor4D, w as TF.Tensor4D, 1, pad);
        if (pass === "backward (input)") {
          return e.runKernel("Conv2DBackpropInput", { dy, filter: w }, {
            strides: 1,
            pad,
            dataFormat: "NHWC",
            inputShape: xs,
          } as unknown as TF.NamedAttrMap) as TF.Tensor;
        }
        return e.runKernel("Conv2DBackpropFilter", { x, dy }, {
          strides: 1,
          pad,
          dataFormat: "NHWC",
          filterShape: ws,
        } as unknown as TF.NamedAttrMap) as TF.Tensor;
      };
      const t = await timeTf(tf, make, opts.runs, info.timestampQuery);
      const o = await timeOursConv(
        [B, cv.c, cv.hw, cv.hw],
        [cv.o, cv.dw ? 1 : cv.c, k, k],
        { stride: 1, padding: pad, groups: cv.dw ? cv.c : 1 },
        pass,
        opts.timing,
        rng,
      );
      const shape = `x [${B},${cv.c},${cv.hw},${cv.hw}]`;
      // the issue sets 2× for the depthwise forward and weight gradient
      const target = cv.dw && pass !== "backward (input)" ? cv.target : null;
      pushTimed({ op: cv.op, shape, pass, flops }, t, "conv2d", o, target);
    }
    x.dispose();
    w.dispose();
    dy.dispose();
  }
  return { info, rows };
}
