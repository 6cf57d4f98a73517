// Activations beyond tests/registry.ts (GELU and softmax on odd shapes and the PyTorch fixtures): the
// f64 erfc reference itself, GELU at 0 and far into its tails, softmax of huge logits and a bad dim, and
// one pipeline for every batch size.

import { gelu, softmax } from "../autograd/ops/activation.ts";
import { noGrad, tensor } from "../mod.ts";
import { erfc64, gelu64, geluGrad64, geluRef, softmaxRef } from "../kernels/reference/activation.ts";
import { pipelineKeys } from "../kernels/runtime.ts";
import { assertClose, checkOp, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

Deno.test("the f64 erfc reference", () => {
  // erfc(0.5), erfc(2), erfc(5) from tables
  assertClose([erfc64(0.5), erfc64(2), erfc64(5), erfc64(-1)], [
    0.4795001221869535,
    0.004677734981047266,
    1.5374597944280349e-12,
    1.8427007929497148,
  ], { rtol: 1e-13, atol: 0 });
});

Deno.test("gelu at 0 and at large |x|", async () => {
  const xs = [0, -0.5, 0.5, -3, 3, -5, 5, -8, 8, -10, 10, -20, 20, -1e4, 1e4, -3e38, 3e38];
  const x = tensor(xs, [xs.length], { requiresGrad: true });
  const y = gelu(x);
  y.backward(tensor(new Float32Array(xs.length).fill(1), [xs.length]));
  const yv = await y.toArray(), gv = await x.grad!.toArray();
  assert.ok([...yv, ...gv].every(Number.isFinite), `gelu gave a non-finite value: ${yv} / ${gv}`);
  assert.equal(yv[0], 0);
  assert.equal(gv[0], 0.5);
  // relative accuracy holds far into the negative tail (no 1 + erf cancellation); f32 rounding of
  // z² and exp() costs ~1e-7·z² there
  assertClose(yv, xs.map((v) => Math.fround(gelu64(v))), { rtol: 2e-5, atol: 1e-37 }, "gelu");
  assertClose(gv, xs.map((v) => Math.fround(geluGrad64(v))), { rtol: 2e-5, atol: 1e-37 }, "gelu'");
  [x, y].forEach((t) => t.dispose());
});

Deno.test("softmax rows sum to 1, also with logits around ±1e4", async () => {
  const x = tensor(Float32Array.from([1e4, 1e4 - 1, -1e4, 0, 3e4, 3e4, 3e4, -3e4, 5, 6, 7, 8]), [3, 4]);
  const y = noGrad(() => softmax(x, 1));
  const v = await y.toArray();
  assert.ok(v.every(Number.isFinite));
  for (let r = 0; r < 3; r++) {
    assertClose([v[r * 4] + v[r * 4 + 1] + v[r * 4 + 2] + v[r * 4 + 3]], [1], { rtol: 1e-6 });
  }
  assertClose(v, softmaxRef(Float64Array.from(await x.toArray()), [3, 4], 1), { rtol: 1e-5, atol: 1e-7 });
  assert.throws(() => softmax(x, 2), /softmax: dim 2 out of range for \[3, 4\]/);
  [x, y].forEach((t) => t.dispose());
});

Deno.test("gelu and softmax at two batch sizes: one pipeline serves both", async () => {
  const run = async (n: number) => {
    await checkOp({ name: "gelu", shapes: [[n, 7]], gpu: ([x]) => gelu(x), cpu: ([x]) => geluRef(x) });
    for (const shape of [[n, 10], [n, 3, 4]]) {
      await checkOp({
        name: `softmax of [${shape}]`,
        shapes: [shape],
        gpu: ([x]) => softmax(x, 1),
        cpu: ([x]) => softmaxRef(x, shape, 1),
      });
    }
  };
  await run(2);
  const before = new Set(pipelineKeys());
  await run(5);
  assert.deepEqual(pipelineKeys().filter((k) => !before.has(k)), []);
});
