// The depthwise/direct weight gradient with its sums reduced in the workgroup (fusion
// "depthwise-weight-tree") and without (partial sums, then a second pass): both equal the CPU
// reference on odd shapes, and the tree (forced on: the software profile turns it off) records one
// dispatch where the split records two.

import { Rng, tensor } from "../mod.ts";
import { empty } from "../autograd/tensor.ts";
import {
  depthwiseBackwardInput,
  depthwiseBackwardWeight,
  depthwiseForward,
  depthwiseForwardParts,
  depthwiseWeightTreeFits,
} from "../kernels/depthwise.ts";
import {
  conv2dBackwardInputRef,
  conv2dBackwardWeightRef,
  conv2dRef,
  convShape,
} from "../kernels/reference/conv.ts";
import { normStatsFromParts } from "../kernels/norm.ts";
import type { ConvShape } from "../kernels/shapes.ts";
import { withPlanOverride } from "../kernels/planner.ts";
import { pipelineKeys, startCapture, stopCapture } from "../kernels/runtime.ts";
import { assertClose, randomArray, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

// [n, c, h, w], k, stride, pad: the ConvNeXt 7×7 (batch 1 and 3, C not a multiple of 4), a strided
// 3×3, a 7×7 on a 4×4 image (padding wider than the image's half), and a 9×9 whose tree does not fit
const cases: [number[], number, number, number][] = [
  [[1, 5, 9, 9], 7, 1, 3],
  [[3, 6, 9, 9], 7, 1, 3],
  [[3, 5, 9, 9], 3, 2, 1],
  [[3, 3, 4, 4], 7, 1, 3],
  [[2, 3, 11, 11], 9, 1, 4],
];

for (const [shape, k, stride, pad] of cases) {
  Deno.test(`depthwise weight gradient [${shape}] k${k} s${stride} p${pad}: tree and split = reference`, async () => {
    const s = convShape(shape, shape[1], k, stride, pad, shape[1]);
    const rng = new Rng(21);
    const x = randomArray(rng, s.n * s.c * s.h * s.w);
    const dy = randomArray(rng, s.n * s.o * s.oh * s.ow);
    const expected = conv2dBackwardWeightRef(dy, x, s);
    const [tx, tdy] = [
      tensor(Float32Array.from(x), shape),
      tensor(Float32Array.from(dy), [s.n, s.o, s.oh, s.ow]),
    ];
    for (const spec of ["fuse.depthwise-weight-tree=on", "fuse.depthwise-weight-tree=off"]) {
      const dw = empty([s.c, 1, k, k]);
      startCapture();
      withPlanOverride(spec, () => depthwiseBackwardWeight(tdy.binding(), tx.binding(), dw.binding(), s));
      const dispatches = stopCapture().length;
      assertClose(await dw.toArray(), expected, {}, `dw (${spec})`);
      if (spec.endsWith("=on") && depthwiseWeightTreeFits(k)) {
        assert.equal(dispatches, 1, "the tree writes dw directly");
      }
      dw.dispose();
    }
    [tx, tdy].forEach((t) => t.dispose());
  });
}

/** The three depthwise/direct passes of `s` (the forward with its GroupNorm statistics) = the references. */
async function directPasses(s: ConvShape, groups: number, tree: "on" | "off"): Promise<void> {
  const rng = new Rng(s.n);
  const x = randomArray(rng, s.n * s.c * s.h * s.w), w = randomArray(rng, s.c * s.k * s.k);
  const dy = randomArray(rng, s.n * s.o * s.oh * s.ow);
  const t = [x, w, dy].map((a) => tensor(Float32Array.from(a)));
  const perImage = depthwiseForwardParts(s);
  const y = empty([dy.length]), dx = empty([x.length]), dw = empty([w.length]);
  const parts = empty([s.n * perImage, 4]), mean = empty([s.n * groups]), rstd = empty([s.n * groups]);
  withPlanOverride(`fuse.depthwise-weight-tree=${tree}`, () => {
    depthwiseForward(t[0].binding(), t[1].binding(), null, y.binding(), s, parts.binding());
    normStatsFromParts(parts.binding(), {
      stats: s.n * groups,
      parts: perImage / groups,
      eps: 1e-5,
      mean: mean.binding(),
      rstd: rstd.binding(),
    });
    depthwiseBackwardInput(t[2].binding(), t[1].binding(), dx.binding(), s);
    depthwiseBackwardWeight(t[2].binding(), t[0].binding(), dw.binding(), s);
  });
  const ref = conv2dRef(x, w, null, s);
  const name = `[${s.n},${s.c},${s.h},${s.w}] s${s.stride} tree ${tree}`;
  assertClose(await y.toArray(), ref, {}, `${name} forward`);
  const per = ref.length / (s.n * groups);
  const sets = Array.from({ length: s.n * groups }, (_, i) => ref.subarray(i * per, (i + 1) * per));
  const mu = sets.map((v) => v.reduce((a, b) => a + b, 0) / per);
  const r = sets.map((v, i) => 1 / Math.sqrt(v.reduce((a, b) => a + (b - mu[i]) ** 2, 0) / per + 1e-5));
  assertClose(await mean.toArray(), Float64Array.from(mu), {}, `${name} mean`);
  assertClose(await rstd.toArray(), Float64Array.from(r), { rtol: 1e-3, atol: 1e-4 }, `${name} rstd`);
  assertClose(await dx.toArray(), conv2dBackwardInputRef(dy, w, s), {}, `${name} input gradient`);
  assertClose(await dw.toArray(), conv2dBackwardWeightRef(dy, x, s), {}, `${name} weight gradient`);
  [...t, y, dx, dw, parts, mean, rstd].forEach((a) => a.dispose());
}

Deno.test("depthwise/direct at two batch sizes: the references, and no new pipeline for the second", async () => {
  const run = async (n: number) => {
    for (const tree of ["on", "off"] as const) {
      await directPasses(convShape([n, 6, 9, 9], 6, 7, 1, 3, 6), 2, tree);
      await directPasses(convShape([n, 4, 8, 8], 4, 3, 2, 1, 4), 1, tree);
    }
  };
  await run(2);
  const before = new Set(pipelineKeys());
  await run(5);
  const fresh = pipelineKeys().filter((k) => !before.has(k));
  assert.deepEqual(fresh.filter((k) => /^(depthwise_|norm_)/.test(k)), []);
});
