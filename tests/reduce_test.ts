import { mean, sum, sumTo } from "../mod.ts";
import { checkOp, setup } from "./helpers.ts";
import { sumRef } from "../kernels/reference/reduce.ts";

await setup();

const cases: [number[], number[]][] = [
  [[3, 5, 9, 9], [0, 2, 3]], // per-channel (bias gradient)
  [[3, 5, 9, 9], [1]],
  [[3, 7], [1]],
  [[3, 7], [0, 1]],
  [[2, 600], [1]], // long rows: workgroup reduction
  [[1, 3, 9, 9], [2, 3]],
  // a short sum keeping a last axis that is a multiple of 4: four outputs per invocation, as vec4
  [[6, 12], [0]],
  [[3, 5, 8], [0, 1]],
  [[2, 3, 4], [1]],
];

for (const [shape, axes] of cases) {
  Deno.test(`sum and mean over ${axes} of ${shape}`, async () => {
    const count = axes.reduce((a, i) => a * shape[i], 1);
    await checkOp({
      name: "sum",
      shapes: [shape],
      gpu: ([x]) => sum(x, { dim: axes }),
      cpu: ([x]) => sumRef(x, shape, axes),
    });
    await checkOp({
      name: "mean",
      shapes: [shape],
      gpu: ([x]) => mean(x, { dim: axes, keepDim: true }),
      cpu: ([x]) => sumRef(x, shape, axes, 1 / count),
    });
  });
}

Deno.test("sum of everything and sumTo a broadcast shape", async () => {
  await checkOp({
    name: "sum_all",
    shapes: [[3, 5, 9]],
    gpu: ([x]) => sum(x),
    cpu: ([x]) => Float64Array.of(x.reduce((a, b) => a + b)),
  });
  await checkOp({
    name: "sumTo",
    shapes: [[3, 5, 4, 4]],
    gpu: ([x]) => sumTo(x, [5, 1, 1]),
    cpu: ([x]) => sumRef(x, [3, 5, 4, 4], [0, 2, 3]),
  });
});
