// AdamW (fused, one dispatch) and CosineAnnealingLR against PyTorch golden values
// (scripts/golden/optim.py → tests/fixtures/optim.json).

import assert from "node:assert/strict";
import {
  commandStats,
  copy,
  flush,
  pipelineCacheSize,
  startCapture,
  stopCapture,
  sync,
} from "../kernels/runtime.ts";
import { randn, scope, type Tensor, tensor } from "../autograd/tensor.ts";
import { Rng } from "../autograd/random.ts";
import { conv2d } from "../autograd/ops/conv.ts";
import { groupNorm } from "../autograd/ops/norm.ts";
import { mul } from "../autograd/ops/elementwise.ts";
import { sum } from "../autograd/ops/reduce.ts";
import { AdamW, CosineAnnealingLR } from "../nn/optim.ts";
import type { AdamWGolden } from "../checks/golden_cases.ts";
import { assertClose, setup } from "./helpers.ts";

await setup();

interface Golden {
  adamw: AdamWGolden;
  cosine: { base: number; tMax: number; etaMin: number; lrs: number[] }[];
}

const golden: Golden = JSON.parse(
  await Deno.readTextFile(new URL("./fixtures/optim.json", import.meta.url)),
);

function makeParams(): Tensor[] {
  const g = golden.adamw;
  return g.shapes.map((s, i) => tensor(Float32Array.from(g.init[i]), s, { requiresGrad: true }));
}

Deno.test("AdamW follows PyTorch's trajectory (lr changing every step, gradients from backward)", async () => {
  const g = golden.adamw;
  const params = makeParams();
  const opt = new AdamW(params, { lr: g.lr, betas: g.betas, eps: g.eps, weightDecay: g.weightDecay });
  let pipelines = -1;
  for (const [k, step] of g.steps.entries()) {
    opt.zeroGrad();
    // d/dp sum(p * c) = c: the tape accumulates into the optimizer's gradient arena in place
    scope(() => {
      const terms = params.map((p, i) => sum(mul(p, tensor(Float32Array.from(step.grads[i]), p.shape))));
      terms.forEach((t) => t.backward());
    });
    opt.lr = step.lr;
    flush();
    opt.step();
    assert.equal(commandStats().pendingDispatches, 1, "one dispatch per step");
    if (k === 1) pipelines = pipelineCacheSize();
    if (k > 1) assert.equal(pipelineCacheSize(), pipelines, "a new learning rate compiles nothing");
    for (const [i, p] of params.entries()) {
      assertClose(await p.toArray(), step.params[i], { rtol: 2e-5, atol: 1e-6 }, `step ${k + 1} param ${i}`);
    }
  }
  const state = await opt.stateDict();
  const last = g.steps[g.steps.length - 1];
  assert.equal(state.step, g.steps.length);
  for (let i = 0; i < params.length; i++) {
    assertClose(state.tensors[`${i}.exp_avg`], last.exp_avg[i], { rtol: 1e-5, atol: 1e-7 }, `exp_avg ${i}`);
    assertClose(
      state.tensors[`${i}.exp_avg_sq`],
      last.exp_avg_sq[i],
      { rtol: 1e-5, atol: 1e-9 },
      `exp_avg_sq ${i}`,
    );
  }
  opt.dispose();
});

Deno.test("AdamW: zeroGrad clears, state round-trips into a fresh optimizer and the trajectory continues", async () => {
  const g = golden.adamw;
  const a = makeParams();
  const optA = new AdamW(a, { lr: g.lr, betas: g.betas, eps: g.eps, weightDecay: g.weightDecay });
  const feed = (ps: Tensor[], grads: number[][]) => ps.forEach((p, i) => tensorInto(p.grad!, grads[i]));
  for (const step of g.steps.slice(0, 3)) {
    optA.zeroGrad();
    feed(a, step.grads);
    optA.lr = step.lr;
    optA.step();
  }
  optA.zeroGrad();
  for (const p of a) assert.ok((await p.grad!.toArray()).every((v) => v === 0));
  const saved = await optA.stateDict();
  // a second model resumes from the saved parameters and moments
  const b = makeParams();
  const optB = new AdamW(b, { lr: 1, betas: g.betas, eps: g.eps, weightDecay: g.weightDecay });
  for (const [i, p] of b.entries()) tensorInto(p, Array.from(await a[i].toArray()));
  optB.loadStateDict(saved);
  assert.equal(optB.stepCount, 3);
  assert.equal(optB.lr, saved.lr);
  for (const [k, step] of g.steps.slice(3).entries()) {
    optB.zeroGrad();
    feed(b, step.grads);
    optB.lr = step.lr;
    optB.step();
    for (const [i, p] of b.entries()) {
      assertClose(
        await p.toArray(),
        step.params[i],
        { rtol: 2e-5, atol: 1e-6 },
        `resumed step ${k + 4} param ${i}`,
      );
    }
  }
  assert.throws(
    () => optB.loadStateDict({ ...saved, tensors: { ...saved.tensors, "0.exp_avg": new Float32Array(2) } }),
    /"0.exp_avg" has 2 values/,
  );
  optA.dispose();
  optB.dispose();
  await sync();
});

Deno.test("AdamW: a gradient replaced outside the arena is still used", async () => {
  const [p] = makeParams();
  const opt = new AdamW([p], { lr: 0.1, weightDecay: 0 });
  const g0 = p.grad!;
  p.grad = null; // as if someone cleared it the PyTorch way; backward then creates a fresh one
  scope(() => sum(mul(p, tensor(new Float32Array(p.size).fill(1), p.shape))).backward());
  assert.notEqual(p.grad, g0);
  const before = await p.toArray();
  opt.step();
  assert.equal(p.grad, g0, "the arena view is re-attached");
  const after = await p.toArray();
  // first Adam step with g = 1 moves every value by lr (m̂ / √v̂ = 1)
  assertClose(after, before.map((v) => v - 0.1), { rtol: 1e-5, atol: 1e-5 });
  opt.dispose();
});

Deno.test("CosineAnnealingLR matches PyTorch, past T_max too", () => {
  for (const c of golden.cosine) {
    const opt = { lr: c.base };
    const sched = new CosineAnnealingLR(opt, { tMax: c.tMax, etaMin: c.etaMin });
    const lrs = [sched.lr];
    for (let i = 1; i < c.lrs.length; i++) {
      sched.step();
      lrs.push(sched.lr);
    }
    assertClose(lrs, c.lrs, { rtol: 1e-12, atol: 1e-18 }, `cosine tMax ${c.tMax} etaMin ${c.etaMin}`);
  }
});

Deno.test("CosineAnnealingLR drives AdamW's lr", () => {
  const [p] = makeParams();
  const opt = new AdamW([p], { lr: 0.004 });
  const sched = new CosineAnnealingLR(opt, { tMax: 100 });
  for (let e = 0; e < 50; e++) sched.step();
  assert.ok(Math.abs(opt.lr - 0.002) < 1e-15);
  assert.throws(() => new CosineAnnealingLR(opt, { tMax: 0 }), /tMax must be positive/);
  opt.dispose();
  assert.ok(p.disposed, "the parameters lived in the freed arena");
});

/** Overwrites a tensor's values, in command order (test helper). */
function tensorInto(t: Tensor, values: number[]): void {
  const src = tensor(Float32Array.from(values), t.shape);
  copy(src.storage.buffer, src.storage.offset, t.storage.buffer, t.storage.offset, t.size * 4);
  src.dispose();
}

Deno.test("AdamW: after zeroGrad the backward pass writes parameter gradients into the arena, and a second backward adds", async () => {
  const rng = new Rng(3);
  const x = randn([2, 3, 6, 6], rng);
  const w = randn([4, 3, 3, 3], rng, { requiresGrad: true }), b = randn([4], rng, { requiresGrad: true });
  const gw = randn([4], rng, { requiresGrad: true }), gb = randn([4], rng, { requiresGrad: true });
  const mulBy = randn([2, 4, 6, 6], rng);
  const loss = () => sum(mul(groupNorm(conv2d(x, w, b, { padding: 1 }), 2, gw, gb), mulBy));
  const params = [w, b, gw, gb];
  // the gradients without an optimizer (fresh .grad tensors, the tape's accumulation)
  scope(() => loss().backward());
  const alone = await Promise.all(params.map((p) => p.grad!.toArray()));
  for (const p of params) p.grad = null;

  const opt = new AdamW(params, { lr: 0.1 });
  opt.zeroGrad();
  flush();
  startCapture();
  scope(() => loss().backward());
  const labels = stopCapture().map((d) => d.label);
  assert.equal(labels.filter((l) => l === "grad_accumulate").length, 0, labels.join(", "));
  for (const [i, p] of params.entries()) assert.deepEqual(await p.grad!.toArray(), alone[i]);
  // without zeroGrad a second backward pass accumulates, as PyTorch's does
  scope(() => loss().backward());
  for (const [i, p] of params.entries()) {
    assertClose(
      await p.grad!.toArray(),
      alone[i].map((v) => 2 * v),
      { rtol: 1e-6, atol: 1e-6 },
      `param ${i}`,
    );
  }
});
