import { adaptiveAvgPool2d } from "../autograd/ops/pool.ts";
import { tensor } from "../mod.ts";
import { checkOp, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

/** Adaptive average pooling in f64 with PyTorch's windows. */
function cpuAdaptiveAvgPool(x: Float64Array, shape: number[], oh: number, ow: number): Float64Array {
  const [n, c, h, w] = shape;
  const out = new Float64Array(n * c * oh * ow);
  for (let p = 0; p < n * c; p++) {
    for (let i = 0; i < oh; i++) {
      const y0 = Math.floor((i * h) / oh), y1 = Math.ceil(((i + 1) * h) / oh);
      for (let j = 0; j < ow; j++) {
        const x0 = Math.floor((j * w) / ow), x1 = Math.ceil(((j + 1) * w) / ow);
        let s = 0;
        for (let y = y0; y < y1; y++) for (let xx = x0; xx < x1; xx++) s += x[p * h * w + y * w + xx];
        out[(p * oh + i) * ow + j] = s / ((y1 - y0) * (x1 - x0));
      }
    }
  }
  return out;
}

const cases: [number[], number | [number, number]][] = [
  [[3, 5, 9, 9], 1], // the head: global average
  [[1, 6, 9, 9], 1],
  [[2, 3, 9, 9], 4], // overlapping windows
  [[2, 3, 7, 5], [3, 2]],
  [[1, 2, 2, 3], [5, 4]], // more outputs than inputs
];
for (const [shape, size] of cases) {
  Deno.test(`adaptiveAvgPool2d of ${shape} to ${size}`, async () => {
    const [oh, ow] = typeof size === "number" ? [size, size] : size;
    await checkOp({
      name: "adaptiveAvgPool2d",
      shapes: [shape],
      gpu: ([x]) => adaptiveAvgPool2d(x, size),
      cpu: ([x]) => cpuAdaptiveAvgPool(x, shape, oh, ow),
    });
  });
}

Deno.test("adaptiveAvgPool2d output shape and errors", () => {
  const x = tensor(new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4]);
  const y = adaptiveAvgPool2d(x, 1);
  assert.deepEqual(y.shape, [2, 3, 1, 1]);
  assert.throws(() => adaptiveAvgPool2d(x, 0), /adaptiveAvgPool2d: output size 0 must be positive integers/);
  const v = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => adaptiveAvgPool2d(v, 1), /expects an input \[N, C, H, W\], got \[2, 3\]/);
  [x, y, v].forEach((t) => t.dispose());
});
