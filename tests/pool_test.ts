// Adaptive average pooling beyond tests/registry.ts (values and gradients on odd shapes and the PyTorch
// fixtures): the output shape and argument errors.

import { adaptiveAvgPool2d } from "../autograd/ops/pool.ts";
import { tensor } from "../mod.ts";
import { setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

Deno.test("adaptiveAvgPool2d output shape and errors", () => {
  const x = tensor(new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4]);
  const y = adaptiveAvgPool2d(x, 1);
  assert.deepEqual(y.shape, [2, 3, 1, 1]);
  assert.throws(() => adaptiveAvgPool2d(x, 0), /adaptiveAvgPool2d: output size 0 must be positive integers/);
  const v = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => adaptiveAvgPool2d(v, 1), /expects an input \[N, C, H, W\], got \[2, 3\]/);
  [x, y, v].forEach((t) => t.dispose());
});
