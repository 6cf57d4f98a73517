// Adaptive average pooling beyond tests/registry.ts (values and gradients on odd shapes and the PyTorch
// fixtures): the output shape and argument errors, and one pipeline for every batch size.

import { adaptiveAvgPool2d } from "../autograd/ops/pool.ts";
import { tensor } from "../mod.ts";
import { adaptiveAvgPool2dRef } from "../kernels/reference/pool.ts";
import { pipelineKeys } from "../kernels/runtime.ts";
import { checkOp, setup } from "./helpers.ts";
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

Deno.test("adaptiveAvgPool2d at two batch sizes: one pipeline serves both", async () => {
  const run = async (n: number) => {
    for (const [h, o] of [[4, 1], [5, 3]]) {
      const shape = [n, 3, h, h];
      await checkOp({
        name: `adaptiveAvgPool2d [${shape}] → ${o}`,
        shapes: [shape],
        gpu: ([x]) => adaptiveAvgPool2d(x, o),
        cpu: ([x]) => adaptiveAvgPool2dRef(x, shape, o, o),
      });
    }
  };
  await run(2);
  const before = new Set(pipelineKeys());
  await run(5);
  assert.deepEqual(pipelineKeys().filter((k) => !before.has(k)), []);
});
