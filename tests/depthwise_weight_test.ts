// The depthwise/direct weight gradient with its sums reduced in the workgroup (fusion
// "depthwise-weight-tree") and without (partial sums, then a second pass): both equal the CPU
// reference on odd shapes, and the tree (forced on: the software profile turns it off) records one
// dispatch where the split records two.

import { Rng, tensor } from "../mod.ts";
import { empty } from "../autograd/tensor.ts";
import { depthwiseBackwardWeight, depthwiseWeightTreeFits } from "../kernels/depthwise.ts";
import { conv2dBackwardWeightRef, convShape } from "../kernels/reference/conv.ts";
import { withPlanOverride } from "../kernels/planner.ts";
import { startCapture, stopCapture } from "../kernels/runtime.ts";
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
