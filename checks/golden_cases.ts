// The PyTorch golden fixtures (tests/fixtures/*.json and models_*.safetensors, written by
// scripts/golden/*.py) replayed on whatever WebGPU this runs on. No Deno API: the caller reads and
// parses the fixture (Deno from disk, the page over HTTP) and gets back, per case, the worst error of
// every output and gradient, so Deno's wgpu and Chromium's Dawn are held to the same tolerances.
//
// Error measure: |actual − expected| / (|expected| + atol/rtol), maximised over a case's arrays. An
// element passes `|a − e| ≤ atol + rtol·|e|` exactly when this is ≤ rtol, so a case passes when
// `maxRelError ≤ rtol`.

import { gelu, softmax } from "../autograd/ops/activation.ts";
import { conv2d } from "../autograd/ops/conv.ts";
import { mul } from "../autograd/ops/elementwise.ts";
import { linear } from "../autograd/ops/linear.ts";
import { crossEntropy } from "../autograd/ops/loss.ts";
import { batchNorm2d, groupNorm, layerNorm } from "../autograd/ops/norm.ts";
import { adaptiveAvgPool2d } from "../autograd/ops/pool.ts";
import { sum } from "../autograd/ops/reduce.ts";
import { reshape } from "../autograd/ops/shape.ts";
import { scope, type Tensor, tensor } from "../autograd/tensor.ts";
import { readMany } from "../nn/module.ts";
import { AdamW } from "../nn/optim.ts";
import type { SafetensorsFile } from "../nn/safetensors.ts";
import { buildModel } from "../models/zoo.ts";

export interface CaseResult {
  fixture: string;
  name: string;
  /** Worst |a − e| / (|e| + atol/rtol) over the case's outputs and gradients. */
  maxRelError: number;
  rtol: number;
  /** Which array holds the worst element. */
  worst: string;
  pass: boolean;
}

interface Tol {
  rtol: number;
  atol: number;
}

/** Collects the worst error of one case over several arrays. */
class CaseCheck {
  err = 0;
  worst = "";
  constructor(readonly fixture: string, readonly name: string, readonly tol: Tol) {}
  add(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tol: Tol = this.tol): void {
    if (actual.length !== expected.length) {
      throw new Error(`${this.name} ${what}: ${actual.length} values, expected ${expected.length}`);
    }
    const floor = tol.atol / tol.rtol;
    let e = 0;
    for (let i = 0; i < actual.length; i++) {
      const r = Math.abs(actual[i] - expected[i]) / (Math.abs(expected[i]) + floor);
      e = Number.isNaN(r) ? Infinity : Math.max(e, r);
    }
    // reported on the case's own rtol, so a per-array tolerance stays comparable
    const scaled = e * (this.tol.rtol / tol.rtol);
    if (scaled >= this.err) [this.err, this.worst] = [scaled, what];
  }
  result(): CaseResult {
    const { fixture, name, err, worst, tol } = this;
    return { fixture, name, maxRelError: err, rtol: tol.rtol, worst, pass: err <= tol.rtol };
  }
}

/** An array of a JSON fixture: its shape and its values, row-major. */
export interface Arr {
  shape: number[];
  data: number[];
}

// ---------------------------------------------------------------- ops.json

/** A case of tests/fixtures/ops.json (scripts/golden/ops.py). */
export interface OpCase {
  name: string;
  op: string;
  args: Record<string, unknown>;
  inputs: Record<string, Arr>;
  upstream: Arr;
  output: Arr;
  grads: Record<string, Arr>;
  runningMeanAfter?: Arr;
  runningVarAfter?: Arr;
}

type OpRun = (i: Record<string, Tensor>, a: Record<string, unknown>, s: Record<string, Tensor>) => Tensor;

const OPS: Record<string, OpRun> = {
  gelu: (i) => gelu(i.x),
  softmax: (i, a) => softmax(i.x, a.dim as number),
  crossEntropy: (i, a) => crossEntropy(i.logits, a.targets as number[]),
  crossEntropySoftmax: (i, a) => crossEntropy(softmax(i.logits, 1), a.targets as number[]),
  groupNorm: (i, a) => groupNorm(i.x, a.groups as number, i.weight, i.bias),
  layerNorm: (i, a) => layerNorm(i.x, a.normalizedShape as number[], i.weight, i.bias),
  batchNorm2d: (i, a, s) =>
    batchNorm2d(
      i.x,
      s.runningMean,
      s.runningVar,
      i.weight,
      i.bias,
      a.training as boolean,
      a.momentum as number,
    ),
  adaptiveAvgPool2d: (i, a) => adaptiveAvgPool2d(i.x, a.outputSize as number),
  linear: (i) => linear(i.x, i.weight, i.bias),
  layerScale: (i) => mul(i.x, reshape(i.gamma, [i.gamma.size, 1, 1])),
};

const toTensor = (a: Arr, requiresGrad = false) => tensor(a.data, a.shape, { requiresGrad });

/** tests/fixtures/ops.json: forward, every gradient and BatchNorm's running statistics. */
export async function runOpsFixture(fixture: { cases: OpCase[] }): Promise<CaseResult[]> {
  const out: CaseResult[] = [];
  for (const c of fixture.cases) {
    const run = OPS[c.op];
    if (!run) throw new Error(`ops.json: case "${c.name}" has unknown op "${c.op}"`);
    const check = new CaseCheck("ops.json", c.name, { rtol: 1e-4, atol: 1e-5 });
    const inputs: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(c.inputs)) inputs[k] = toTensor(v, k in c.grads);
    const state: Record<string, Tensor> = {};
    for (const k of ["runningMean", "runningVar"]) if (c.args[k]) state[k] = toTensor(c.args[k] as Arr);
    const y = scope(() => {
      const r = run(inputs, c.args, state);
      r.backward(toTensor(c.upstream));
      return r;
    });
    check.add(await y.toArray(), c.output.data, "output");
    for (const [k, g] of Object.entries(c.grads)) {
      const grad = inputs[k].grad;
      if (!grad) throw new Error(`ops.json: case "${c.name}" got no gradient for ${k}`);
      check.add(await grad.toArray(), g.data, `grad ${k}`);
    }
    if (c.runningMeanAfter) {
      check.add(await state.runningMean.toArray(), c.runningMeanAfter.data, "running mean");
    }
    if (c.runningVarAfter) check.add(await state.runningVar.toArray(), c.runningVarAfter.data, "running var");
    [y, ...Object.values(inputs), ...Object.values(state)].forEach((t) => t.dispose());
    out.push(check.result());
  }
  return out;
}

// ---------------------------------------------------------------- conv.json

/** A case of tests/fixtures/conv.json (scripts/golden/conv.py). */
export interface ConvCase {
  name: string;
  stride: number;
  padding: number;
  groups: number;
  xShape: number[];
  wShape: number[];
  yShape: number[];
  x: number[];
  w: number[];
  b: number[] | null;
  gy: number[];
  y: number[];
  gx: number[];
  gw: number[];
  gb: number[] | null;
}

/** tests/fixtures/conv.json: conv2d forward and its three gradients. */
export async function runConvFixture(fixture: { cases: ConvCase[] }): Promise<CaseResult[]> {
  const out: CaseResult[] = [];
  for (const c of fixture.cases) {
    const check = new CaseCheck("conv.json", c.name, { rtol: 1e-4, atol: 1e-5 });
    const x = tensor(c.x, c.xShape, { requiresGrad: true });
    const w = tensor(c.w, c.wShape, { requiresGrad: true });
    const b = c.b ? tensor(c.b, [c.b.length], { requiresGrad: true }) : null;
    const y = scope(() => {
      const r = conv2d(x, w, b, { stride: c.stride, padding: c.padding, groups: c.groups });
      if (r.shape.join() !== c.yShape.join()) {
        throw new Error(`conv.json: case "${c.name}" gives shape [${r.shape}], PyTorch [${c.yShape}]`);
      }
      r.backward(tensor(c.gy, c.yShape));
      return r;
    });
    check.add(await y.toArray(), c.y, "y");
    check.add(await x.grad!.toArray(), c.gx, "gx");
    check.add(await w.grad!.toArray(), c.gw, "gw");
    if (b) check.add(await b.grad!.toArray(), c.gb!, "gb");
    for (const t of [x, w, b, y]) t?.dispose();
    out.push(check.result());
  }
  return out;
}

// ---------------------------------------------------------------- optim.json (AdamW)

/** The AdamW part of tests/fixtures/optim.json (scripts/golden/optim.py). */
export interface AdamWGolden {
  shapes: number[][];
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  init: number[][];
  steps: { lr: number; grads: number[][]; params: number[][]; exp_avg: number[][]; exp_avg_sq: number[][] }[];
}

/** tests/fixtures/optim.json: the fused AdamW, step by step (gradients through backward). */
export async function runOptimFixture(fixture: { adamw: AdamWGolden }): Promise<CaseResult[]> {
  const g = fixture.adamw;
  const params = g.shapes.map((s, i) => tensor(Float32Array.from(g.init[i]), s, { requiresGrad: true }));
  const opt = new AdamW(params, { lr: g.lr, betas: g.betas, eps: g.eps, weightDecay: g.weightDecay });
  const out: CaseResult[] = [];
  for (const [k, step] of g.steps.entries()) {
    const check = new CaseCheck("optim.json", `AdamW step ${k + 1}`, { rtol: 2e-5, atol: 1e-6 });
    opt.zeroGrad();
    // d/dp sum(p * c) = c
    scope(() =>
      params.forEach((p, i) => sum(mul(p, tensor(Float32Array.from(step.grads[i]), p.shape))).backward())
    );
    opt.lr = step.lr;
    opt.step();
    const values = await readMany(params);
    values.forEach((v, i) => check.add(v, step.params[i], `param ${i}`));
    const st = await opt.stateDict();
    params.forEach((_, i) => {
      check.add(st.tensors[`${i}.exp_avg`], step.exp_avg[i], `exp_avg ${i}`, { rtol: 1e-5, atol: 1e-7 });
      check.add(st.tensors[`${i}.exp_avg_sq`], step.exp_avg_sq[i], `exp_avg_sq ${i}`, {
        rtol: 1e-5,
        atol: 1e-9,
      });
    });
    out.push(check.result());
  }
  opt.dispose();
  return out;
}

// ---------------------------------------------------------------- models_*.safetensors

/** What a tests/fixtures/models_<stage>.safetensors file says its model is (metadata `golden`). */
export interface ModelGoldenMeta {
  stage: string;
  widths: number[];
  depths: number[];
  stemFeatures: number;
}

/**
 * A models_<stage>.safetensors fixture, ready to replay: its metadata, the model it describes (built
 * fresh; the caller disposes it), the model's state spec, the initial state, the input and the targets.
 */
export function modelGolden(file: SafetensorsFile) {
  const meta = JSON.parse(file.metadata.golden) as ModelGoldenMeta;
  const model = buildModel(meta.stage, {
    widths: meta.widths,
    depths: meta.depths,
    stemFeatures: meta.stemFeatures,
  });
  const spec = model.stateSpec();
  const init: Record<string, Float32Array> = {};
  for (const n of Object.keys(spec)) init[n] = file.tensors[n].data;
  return { meta, model, spec, init, x: file.tensors.input, target: Array.from(file.tensors.target.data) };
}

/**
 * One pass of a models fixture in `mode` from its initial state: forward, cross-entropy and backward,
 * with the output, the loss and every parameter's gradient (in `namedParameters()` order) read back.
 */
export async function replayModelGolden(golden: ReturnType<typeof modelGolden>, mode: "train" | "eval") {
  const { meta, model, init, x, target } = golden;
  const params = model.namedParameters();
  model.loadStateDict(init);
  model.train(mode === "train");
  for (const [, p] of params) {
    p.grad?.dispose();
    p.grad = null;
  }
  const [y, l] = scope(() => {
    const o = model.forward(tensor(x.data, x.shape));
    const loss = crossEntropy(o, target);
    loss.backward();
    return [o, loss];
  });
  const [output, loss] = await readMany([y, l]);
  y.dispose();
  l.dispose();
  const grads = await readMany(params.map(([n, p]) => {
    if (!p.grad) throw new Error(`${meta.stage} ${mode}: ${n} got no gradient`);
    return p.grad;
  }));
  return { names: params.map(([n]) => n), output, loss, grads };
}

/**
 * tests/fixtures/models_<stage>.safetensors: a whole model's logits, loss, every parameter gradient
 * and (train mode) running statistics, in train and eval mode, at the tolerances of models_test.ts.
 */
export async function runModelFixture(file: SafetensorsFile, name: string): Promise<CaseResult[]> {
  const golden = modelGolden(file);
  const { meta, model, spec } = golden;
  const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const out: CaseResult[] = [];
  try {
    for (const mode of ["train", "eval"] as const) {
      const check = new CaseCheck(name, `${meta.stage} ${mode}`, { rtol: 1e-3, atol: 1e-5 });
      const g = (k: string) => file.tensors[`${mode}/${k}`].data;
      const r = await replayModelGolden(golden, mode);
      check.add(r.output, g("output"), "output");
      check.add(r.loss, g("loss"), "loss", { rtol: 1e-4, atol: 1e-6 });
      const grads = r.grads;
      const overall = Math.max(...r.names.map((n) => maxAbs(g(`grad/${n}`))));
      r.names.forEach((n, i) => {
        const ref = g(`grad/${n}`);
        check.add(grads[i], ref, `grad ${n}`, {
          rtol: 2e-3,
          atol: Math.max(2e-3 * maxAbs(ref), 1e-5 * overall),
        });
      });
      if (mode === "train") {
        const state = await model.stateDict();
        for (const [n, s] of Object.entries(spec)) {
          if (s.kind === "buffer") {
            check.add(state[n], g(`buffer/${n}`), `buffer ${n}`, { rtol: 1e-4, atol: 1e-6 });
          }
        }
      }
      out.push(check.result());
    }
  } finally {
    model.dispose();
  }
  return out;
}

/** The fixtures this module replays, by file name. */
export const JSON_FIXTURES = ["ops.json", "conv.json", "optim.json"] as const;
export const MODEL_FIXTURES = ["models_final.safetensors", "models_kernel7.safetensors"] as const;

/** Replays one parsed JSON fixture by its file name. */
export function runJsonFixture(name: string, parsed: unknown): Promise<CaseResult[]> {
  switch (name) {
    case "ops.json":
      return runOpsFixture(parsed as { cases: OpCase[] });
    case "conv.json":
      return runConvFixture(parsed as { cases: ConvCase[] });
    case "optim.json":
      return runOptimFixture(parsed as { adamw: AdamWGolden });
    default:
      throw new Error(`no golden runner for fixture "${name}" (known: ${JSON_FIXTURES.join(", ")})`);
  }
}
