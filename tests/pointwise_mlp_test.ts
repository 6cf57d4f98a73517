// The fused pointwise MLP (autograd/ops/pointwise_mlp.ts: conv 1×1 + bias + GELU in the GEMM's store,
// GELU's backward in the next GEMM's input-gradient store) against the unfused chain with fusion
// forced off and against the f64 reference (kernels/reference/pointwise_mlp.ts), for every GEMM
// variant the op can take; and the narrow `final` model's loss and gradients with fusion on and off.

import assert from "node:assert/strict";
import { crossEntropy, gelu, noGrad, Rng, scope, tensor } from "../mod.ts";
import { conv2d } from "../autograd/ops/conv.ts";
import { pointwiseMlp } from "../autograd/ops/pointwise_mlp.ts";
import { buildModel } from "../models/zoo.ts";
import { planFusions } from "../nn/fusions.ts";
import { trainingStepPlan } from "../models/plan.ts";
import { pointwiseMlpBackwardRef, pointwiseMlpRef } from "../kernels/reference/pointwise_mlp.ts";
import { convVariants, startPlanLog, stopPlanLog, withPlanOverride } from "../kernels/planner.ts";
import {
  commandStats,
  flush,
  pipelineKeys,
  poolStats,
  startCapture,
  stopCapture,
  sync,
} from "../kernels/runtime.ts";
import {
  conv1x1BackwardInputGeluGrad,
  conv1x1BackwardWeight,
  conv1x1Forward,
  conv1x1ForwardGelu,
  GEMM1X1_VARIANTS,
} from "../kernels/conv1x1.ts";
import {
  conv2dBackwardBiasRef,
  conv2dBackwardInputRef,
  conv2dBackwardWeightRef,
  conv2dRef,
  convShape,
} from "../kernels/reference/conv.ts";
import { geluBackwardRef, geluRef } from "../kernels/reference/activation.ts";
import type { ConvShape } from "../kernels/shapes.ts";
import { assertClose, randomArray, setup } from "./helpers.ts";

await setup();

interface Case {
  n: number;
  c: number;
  hw: number;
  o: number;
}

// one shape per family of variants (tests/registry_conv_test.ts sweeps the op on the registry's shapes under
// both profiles against the reference; here each variant's fused path meets its unfused chain)
const CASES: Case[] = [
  { n: 3, c: 5, hw: 9, o: 5 }, // C, E not multiples of 4, P = 81: tiled, scalar only
  { n: 3, c: 8, hw: 4, o: 8 }, // P = 16 < columnsBelowPixels: columns variants too
  { n: 1, c: 8, hw: 8, o: 12 }, // texture and vec4 per image
];
const VARIANTS = [
  "texture",
  "columns-texture",
  "tiled",
  "columns-tiled",
  "vec4-texture",
  "vec4-texture-half",
  "vec4",
  "scalar",
];

type Grads = Float32Array[];
interface Run {
  y: Float32Array;
  grads: Grads;
  variants: string[];
}

/** Inputs of a case: x, w1, b1, w2, b2 (f64 for the reference). */
function inputs(cs: Case, seed: number): { shapes: number[][]; data: Float64Array[] } {
  const e = 4 * cs.c;
  const shapes = [[cs.n, cs.c, cs.hw, cs.hw], [e, cs.c, 1, 1], [e], [cs.o, e, 1, 1], [cs.o]];
  const rng = new Rng(seed);
  // x spread over [-2, 2] so pre reaches both GELU tails; weights scaled like PyTorch's init
  const scales = [2, 1 / Math.sqrt(cs.c), 0.5, 1 / Math.sqrt(e), 0.5];
  return { shapes, data: shapes.map((s, i) => randomArray(rng, s.reduce((a, b) => a * b, 1), scales[i])) };
}

/** The op (fused) or the module chain (conv2d → gelu → conv2d), forward and backward from dy. */
async function run(
  cs: Case,
  fused: boolean,
  spec: string,
  dy64: Float64Array,
  data: Float64Array[],
  shapes: number[][],
): Promise<Run> {
  const before = poolStats().bytesInUse;
  const leaves = shapes.map((s, i) => tensor(Float32Array.from(data[i]), s, { requiresGrad: true }));
  const [x, w1, b1, w2, b2] = leaves;
  startPlanLog();
  const y = withPlanOverride(spec, () =>
    scope(() => {
      // the op takes the fusions the plan override sets
      const out = fused
        ? pointwiseMlp(x, w1, b1, w2, b2, planFusions())
        : conv2d(gelu(conv2d(x, w1, b1)), w2, b2);
      const up = tensor(Float32Array.from(dy64), out.shape);
      out.backward(up);
      up.dispose();
      return out;
    }));
  const variants = stopPlanLog().map((p) => `${p.pass}:${p.variant}`);
  const res = {
    y: await y.toArray(),
    grads: await Promise.all(leaves.map((t) => t.grad!.toArray())),
    variants,
  };
  y.dispose();
  leaves.forEach((t) => t.dispose());
  assert.equal(poolStats().bytesInUse, before, "every buffer back in the pool");
  void cs;
  return res;
}

const NAMES = ["x", "w1", "b1", "w2", "b2"];
const covered = new Set<string>();

for (const cs of CASES) {
  const e = 4 * cs.c;
  const s1 = {
    n: cs.n,
    c: cs.c,
    h: cs.hw,
    w: cs.hw,
    o: e,
    k: 1,
    stride: 1,
    pad: 0,
    groups: 1,
    oh: cs.hw,
    ow: cs.hw,
  };
  const s2 = { ...s1, c: e, o: cs.o };
  const runnable = VARIANTS.filter((v) =>
    [s1, s2].some((s) =>
      [...convVariants(s, "forward"), ...convVariants(s, "inputGrad")].includes(`gemm1x1/${v}`)
    )
  );
  Deno.test(`pointwiseMlp = unfused = reference, N=${cs.n} C=${cs.c} ${cs.hw}×${cs.hw} O=${cs.o}: ${runnable.join(", ")}`, async () => {
    const { shapes, data } = inputs(cs, 100 + cs.c + cs.n);
    const d = { n: cs.n, c: cs.c, p: cs.hw * cs.hw, e, o: cs.o };
    const dy = randomArray(new Rng(7), cs.n * cs.o * d.p);
    const ref = pointwiseMlpRef(data[0], data[1], data[2], data[3], data[4], d);
    const g = pointwiseMlpBackwardRef(data[0], data[1], data[2], data[3], data[4], dy, d);
    const refGrads = [g.dx, g.dw1, g.db1, g.dw2, g.db2];
    for (const v of ["", ...runnable]) {
      const spec = v ? `conv=${v}` : "";
      const fused = await run(cs, true, spec, dy, data, shapes);
      const plain = await run(cs, false, `${spec ? spec + "," : ""}fuse=off`, dy, data, shapes);
      // both paths plan the same passes with the same variants
      assert.deepEqual(fused.variants, plain.variants, `plan of ${spec || "defaults"}`);
      for (const p of fused.variants) covered.add(p.split(":")[1]);
      const what = (t: string) => `${spec || "defaults"} ${t}`;
      assertClose(fused.y, plain.y, { rtol: 1e-5, atol: 1e-6 }, what("y fused vs unfused"));
      assertClose(fused.y, ref.y, { rtol: 1e-4, atol: 1e-5 }, what("y vs reference"));
      fused.grads.forEach((gr, i) => {
        assertClose(gr, plain.grads[i], { rtol: 1e-4, atol: 1e-6 }, what(`d${NAMES[i]} fused vs unfused`));
        assertClose(gr, refGrads[i], { rtol: 1e-4, atol: 1e-4 }, what(`d${NAMES[i]} vs reference`));
      });
    }
  });
}

Deno.test("pointwiseMlp: every GEMM variant was exercised", () => {
  for (const v of VARIANTS) {
    assert.ok(covered.has(`gemm1x1/${v}`), `gemm1x1/${v} never ran (${[...covered]})`);
  }
});

Deno.test("pointwiseMlp: each fusion alone off gives the same values; a no-grad forward (no pre kept) the same y", async () => {
  const cs = { n: 3, c: 8, hw: 4, o: 8 };
  const { shapes, data } = inputs(cs, 5);
  const dy = randomArray(new Rng(3), cs.n * cs.o * 16);
  const all = await run(cs, true, "", dy, data, shapes);
  for (const spec of ["fuse.bias-gelu=off", "fuse.gelu-backward=off"]) {
    const r = await run(cs, true, spec, dy, data, shapes);
    assertClose(r.y, all.y, { rtol: 1e-5, atol: 1e-6 }, `${spec} y`);
    r.grads.forEach((gr, i) =>
      assertClose(gr, all.grads[i], { rtol: 1e-4, atol: 1e-6 }, `${spec} d${NAMES[i]}`)
    );
  }
  const [x, w1, b1, w2, b2] = shapes.map((s, i) => tensor(Float32Array.from(data[i]), s));
  const y = noGrad(() => pointwiseMlp(x, w1, b1, w2, b2));
  assert.equal(y.requiresGrad, false);
  assertClose(await y.toArray(), all.y, { rtol: 1e-5, atol: 1e-6 }, "no-grad y");
  [x, w1, b1, w2, b2, y].forEach((t) => t.dispose());
});

Deno.test("pointwiseMlp: bad weights give a clear error", () => {
  const x = tensor(new Float32Array(2 * 4 * 9), [2, 4, 3, 3]);
  const w3 = tensor(new Float32Array(8 * 4 * 9), [8, 4, 3, 3]);
  const w2 = tensor(new Float32Array(4 * 8), [4, 8, 1, 1]);
  assert.throws(() => pointwiseMlp(x, w3, null, w2, null), /expand weight must be 1×1/);
  const wBad = tensor(new Float32Array(4 * 5), [4, 5, 1, 1]);
  const w1 = tensor(new Float32Array(8 * 4), [8, 4, 1, 1]);
  assert.throws(() => pointwiseMlp(x, w1, null, wBad, null), /conv2d: input has 8 channels/);
  [x, w3, w2, wBad, w1].forEach((t) => t.dispose());
});

// ---------------------------------------------------------------- the narrow final model

const NARROW = { widths: [16, 32, 64, 128], depths: [1, 1, 3, 1], stemFeatures: 16, seed: 1 };

/** Loss and every parameter's gradient of one step, and the dispatches recorded by it. */
async function modelStep(
  spec: string,
  batch: number,
): Promise<{ loss: number; grads: Grads; dispatches: number }> {
  const model = buildModel("final", NARROW);
  model.train();
  const rng = new Rng(11);
  const x = tensor(Float32Array.from(randomArray(rng, batch * 3 * 32 * 32, 2)), [batch, 3, 32, 32]);
  const labels = tensor(Int32Array.from({ length: batch }, (_, i) => (i * 3) % 10), [batch]);
  await sync();
  flush();
  const lossT = withPlanOverride(spec, () =>
    scope(() => {
      const l = crossEntropy(model.forward(x), labels);
      l.backward();
      return l;
    }));
  const dispatches = commandStats().pendingDispatches;
  const loss = (await lossT.toArray())[0];
  const grads = await Promise.all(model.parameters().map((p) => p.grad!.toArray()));
  lossT.dispose();
  x.dispose();
  labels.dispose();
  model.dispose();
  return { loss, grads, dispatches };
}

Deno.test("narrow final: loss and every gradient equal with fusion on and off; fewer dispatches", async () => {
  const on = await modelStep("", 3);
  const mine = await modelStep("fuse.bias-gelu=off,fuse.gelu-backward=off", 3);
  const off = await modelStep("fuse=off", 3);
  for (const [name, r] of [["bias-gelu, gelu-backward off", mine], ["fuse=off", off]] as const) {
    assertClose([on.loss], [r.loss], { rtol: 1e-4, atol: 0 }, `${name}: loss`);
    assert.equal(on.grads.length, r.grads.length);
    // rel 1e-4 per element, and an absolute floor of 1e-6 of the largest gradient: the stem conv's
    // bias (before a BatchNorm) has a gradient of 0 in exact arithmetic, here only rounding noise
    const scale = r.grads.reduce((m, g) => g.reduce((a, v) => Math.max(a, Math.abs(v)), m), 0);
    on.grads.forEach((g, i) => {
      assertClose(g, r.grads[i], { rtol: 1e-4, atol: 1e-6 * scale }, `${name}: gradient ${i}`);
    });
  }
  // one GELU pass fewer per block forward and one per block backward (6 blocks; on this model every
  // expand forward and project input gradient runs a GEMM variant with an epilogue)
  assert.equal(
    mine.dispatches - on.dispatches,
    12,
    `dispatches fused ${on.dispatches}, unfused ${mine.dispatches}`,
  );
  console.log(
    `narrow final step, batch 3: ${on.dispatches} dispatches fused, ${mine.dispatches} with bias-gelu and ` +
      `gelu-backward off, ${off.dispatches} with fuse=off`,
  );
});

Deno.test("narrow final: the plan lists the same passes, layers and variants with fusion on and off", () => {
  const on = trainingStepPlan("final", NARROW, 64);
  const off = withPlanOverride("fuse=off", () => trainingStepPlan("final", NARROW, 64));
  assert.deepEqual(on, off);
  const project = on.filter((p) => p.layer === "encoder.stages.2.1.block.4").map((p) => p.pass);
  assert.deepEqual(project, ["forward", "inputGrad", "weightGrad"]);
  // summary() runs module by module: every leaf of the block is listed
  const rows = buildModel("final", NARROW).summary().map((r) => r.name);
  for (const i of [0, 1, 2, 3, 4]) assert.ok(rows.includes(`encoder.stages.0.0.block.${i}`), `block.${i}`);
});

// ---------------------------------------------------------------- one pipeline for every batch size

/** The pipeline-key families of the 1×1 conv kernels and the tiled GEMM. */
const FAMILIES = ["c1x1", "conv1x1_", "gemm_tiled", "swap_leading"];
const ours = (keys: string[]) => keys.filter((k) => FAMILIES.some((f) => k.startsWith(f)));

/** Every pass of 1×1 conv `variant` on shape `s` (GELU epilogues included) against the f64 reference. */
async function conv1x1Passes(variant: string, s: ConvShape, seed: number): Promise<void> {
  const rng = new Rng(seed);
  const p = s.h * s.w;
  const x = randomArray(rng, s.n * s.c * p), w = randomArray(rng, s.o * s.c, 0.5);
  const b = randomArray(rng, s.o),
    dy = randomArray(rng, s.n * s.o * p),
    pre = randomArray(rng, s.n * s.c * p);
  const up = (a: Float64Array) => tensor(Float32Array.from(a));
  const [tx, tw, tb, tdy, tpre] = [x, w, b, dy, pre].map(up);
  const [y, ypre, yg, dx, dw, db] = [
    s.o * p * s.n,
    s.o * p * s.n,
    s.o * p * s.n,
    s.c * p * s.n,
    s.o * s.c,
    s.o,
  ]
    .map((len) => tensor(new Float32Array(len)));
  const biasGrad = GEMM1X1_VARIANTS.find((v) => v.name === variant)!.biasGrad;
  conv1x1Forward(tx.binding(), tw.binding(), tb.binding(), y.binding(), s, variant);
  conv1x1ForwardGelu(tx.binding(), tw.binding(), tb.binding(), ypre.binding(), yg.binding(), s, variant);
  conv1x1BackwardInputGeluGrad(tdy.binding(), tw.binding(), tpre.binding(), dx.binding(), s, variant);
  conv1x1BackwardWeight(
    tdy.binding(),
    tx.binding(),
    dw.binding(),
    s,
    variant,
    biasGrad ? db.binding() : null,
  );
  const what = (t: string) => `${variant} N=${s.n} ${s.c}→${s.o} ${s.h}×${s.w}: ${t}`;
  const tol = { rtol: 1e-4, atol: 1e-4 };
  const yRef = conv2dRef(x, w, b, s);
  assertClose(await y.toArray(), yRef, tol, what("y"));
  assertClose(await ypre.toArray(), yRef, tol, what("pre"));
  assertClose(await yg.toArray(), geluRef(yRef), tol, what("gelu(y)"));
  assertClose(await dx.toArray(), geluBackwardRef(pre, conv2dBackwardInputRef(dy, w, s)), tol, what("dx"));
  assertClose(await dw.toArray(), conv2dBackwardWeightRef(dy, x, s), tol, what("dw"));
  if (biasGrad) assertClose(await db.toArray(), conv2dBackwardBiasRef(dy, s), tol, what("db"));
  [tx, tw, tb, tdy, tpre, y, ypre, yg, dx, dw, db].forEach((t) => t.dispose());
}

Deno.test("conv 1×1 kernels: batch 2 and 5 match the reference, the second batch creates no pipeline", async () => {
  // 2×2 images: pixel columns merged over the images; 8×8: per image, the image on grid z
  const images = [{ c: 8, h: 2, w: 2, o: 12 }, { c: 8, h: 8, w: 8, o: 12 }, { c: 5, h: 3, w: 3, o: 6 }];
  const variants = ["gemm1x1/vec4", "gemm1x1/vec4-texture", "gemm1x1/vec4-texture-half", "gemm1x1/scalar"];
  const round = async (n: number) => {
    for (const im of images) {
      const s = convShape([n, im.c, im.h, im.w], im.o, 1);
      for (const v of [...variants, "gemm1x1/tiled"]) {
        if (!convVariants(s, "forward").includes(v)) continue;
        await conv1x1Passes(v, s, n * 10 + im.c);
      }
    }
    await sync();
  };
  await round(2);
  const before = new Set(pipelineKeys());
  await round(5);
  const fresh = ours(pipelineKeys().filter((k) => !before.has(k)));
  assert.deepEqual(fresh, [], "pipelines created for batch 5");
});

// ---------------------------------------------------------------- the weight gradient's reduction

Deno.test("conv 1×1 weight gradient with bias: one reduction dispatch after the split GEMM writes dw and db", async () => {
  // 8 images of 16×16: the pixels are split into chunks (grid z), each writing partial dw and db
  const s = convShape([8, 8, 16, 16], 12, 1);
  const p = s.h * s.w;
  const rng = new Rng(11);
  const x = randomArray(rng, s.n * s.c * p), dy = randomArray(rng, s.n * s.o * p);
  const [tx, tdy] = [x, dy].map((a) => tensor(Float32Array.from(a)));
  const tol = { rtol: 1e-4, atol: 1e-4 };
  for (const variant of ["gemm1x1/vec4-texture", "gemm1x1/vec4-texture-half", "gemm1x1/vec4"]) {
    const [dw, db, dwAlone] = [s.o * s.c, s.o, s.o * s.c].map((len) => tensor(new Float32Array(len)));
    flush();
    startCapture();
    conv1x1BackwardWeight(tdy.binding(), tx.binding(), dw.binding(), s, variant, db.binding());
    const captured = stopCapture();
    const gemm = captured.findIndex((d) => d.label === variant);
    const labels = captured.map((d) => d.label);
    assert.ok(gemm >= 0, `${variant}: ${labels}`);
    assert.ok(
      captured[gemm].workgroups[2] > 1,
      `${variant}: the pixels are split (grid ${captured[gemm].workgroups})`,
    );
    assert.deepEqual(labels.slice(gemm + 1), ["sum_chunks"], `${variant}: ${labels}`);
    // without the bias the weight's partials are summed by sumAxes: the same sums, the same bits
    conv1x1BackwardWeight(tdy.binding(), tx.binding(), dwAlone.binding(), s, variant);
    const [w, b, wAlone] = await Promise.all([dw, db, dwAlone].map((t) => t.toArray()));
    assert.deepEqual(w, wAlone, `${variant}: dw with the bias as without`);
    assertClose(w, conv2dBackwardWeightRef(dy, x, s), tol, `${variant}: dw`);
    assertClose(b, conv2dBackwardBiasRef(dy, s), tol, `${variant}: db`);
    [dw, db, dwAlone].forEach((t) => t.dispose());
  }
  [tx, tdy].forEach((t) => t.dispose());
});
