// Cross-entropy beyond tests/registry.ts (logits on odd shapes, the double softmax and the PyTorch
// fixtures): other target types, logits around ±1e4, bad targets and out-of-range tensor targets, and
// one pipeline for every batch size (with the metrics kernel, which reads the same logits and targets).

import { crossEntropy } from "../autograd/ops/loss.ts";
import { tensor } from "../mod.ts";
import { crossEntropyRef } from "../kernels/reference/loss.ts";
import { pipelineKeys } from "../kernels/runtime.ts";
import { GpuMetrics } from "../training/metrics.ts";
import { assertClose, checkOp, randomArray, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

Deno.test("crossEntropy takes Int32Array and tensor targets like arrays", async () => {
  const n = 6, c = 10, t = [9, 1, 1, 0, 5, 3];
  for (const kind of ["int32", "tensor"]) {
    const tt = kind === "tensor" ? tensor(t, [n]) : null;
    await checkOp({
      name: `crossEntropy_${kind}`,
      shapes: [[n, c]],
      init: (rng, s) => randomArray(rng, s[0] * s[1], 3),
      gpu: ([x]) => crossEntropy(x, tt ?? Int32Array.from(t)),
      cpu: ([x]) => Float64Array.of(crossEntropyRef(x, n, c, t)),
    });
    tt?.dispose();
  }
});

Deno.test("crossEntropy with logits around ±1e4: no overflow", async () => {
  const n = 4, c = 6, t = [0, 5, 2, 3];
  await checkOp({
    name: "crossEntropy_large",
    shapes: [[n, c]],
    // integers keep the f32 inputs exact; differences of ~1e4 make some probabilities underflow to 0
    init: (rng, s) => Float64Array.from({ length: s[0] * s[1] }, () => Math.round(2e4 * rng.uniform() - 1e4)),
    gpu: ([x]) => crossEntropy(x, t),
    cpu: ([x]) => Float64Array.of(crossEntropyRef(x, n, c, t)),
    gradTol: { rtol: 1e-3, atol: 1e-4 },
  });
  const x = tensor([1e4, 1e4 - 2, -1e4, 3e4, 3e4, -3e4], [2, 3], { requiresGrad: true });
  const loss = crossEntropy(x, [1, 0]);
  loss.backward();
  const expected = crossEntropyRef(Float64Array.from(await x.toArray()), 2, 3, [1, 0]);
  assertClose([await loss.item()], [expected], { rtol: 1e-5 });
  assert.ok((await x.grad!.toArray()).every(Number.isFinite));
  [x, loss].forEach((v) => v.dispose());
});

Deno.test("crossEntropy rejects bad targets", () => {
  const x = tensor(new Float32Array(12), [3, 4]);
  assert.throws(() => crossEntropy(x, [0, 1]), /crossEntropy: 2 targets do not match logits \[3, 4\]/);
  assert.throws(() => crossEntropy(x, [0, 4, 1]), /target 4 at index 1 is not a class index in \[0, 4\)/);
  assert.throws(() => crossEntropy(x, Int32Array.from([0, 1, -1])), /target -1 at index 2/);
  assert.throws(() => crossEntropy(x, [0, 1.5, 1]), /target 1.5/);
  const t2 = tensor([0, 1, 2, 3], [2, 2]);
  assert.throws(() => crossEntropy(x, t2), /targets \[2, 2\] do not match logits \[3, 4\]: expected \[3\]/);
  const v = tensor(new Float32Array(4), [4]);
  assert.throws(() => crossEntropy(v, [0]), /expects logits \[N, C\], got \[4\]/);
  [x, t2, v].forEach((a) => a.dispose());
});

Deno.test("crossEntropy with an out-of-range tensor target gives NaN (not range-checked)", async () => {
  const x = tensor(new Float32Array(8), [2, 4]);
  for (const bad of [[0, 4], [-1, 0], [0.5, 1]]) {
    const t = tensor(bad, [2]);
    const loss = crossEntropy(x, t);
    assert.ok(Number.isNaN(await loss.item()), `target ${bad} should give NaN`);
    [t, loss].forEach((a) => a.dispose());
  }
  x.dispose();
});

Deno.test("crossEntropy and the metrics kernel at two batch sizes: one pipeline serves both", async () => {
  const c = 10;
  const metrics = new GpuMetrics();
  const run = async (n: number) => {
    const t = Array.from({ length: n }, (_, i) => (3 * i) % c);
    await checkOp({
      name: `crossEntropy [${n}, ${c}]`,
      shapes: [[n, c]],
      init: (rng, s) => randomArray(rng, s[0] * s[1], 3),
      gpu: ([x]) => crossEntropy(x, t),
      cpu: ([x]) => Float64Array.of(crossEntropyRef(x, n, c, t)),
    });
    // row r predicts class r % c (its largest logit); the targets hit every other row
    const logits = new Float32Array(n * c).map((_, i) => (i % c === Math.floor(i / c) % c ? 1 : 0));
    const targets = Array.from({ length: n }, (_, r) => r % 2 === 0 ? r % c : (r + 1) % c);
    const [x, y, loss] = [tensor(logits, [n, c]), tensor(targets, [n]), tensor([0.5], [1])];
    metrics.reset();
    metrics.add(x, y, loss);
    assert.deepEqual(await metrics.read(), { lossSum: 0.5 * n, correct: Math.ceil(n / 2), count: n });
    [x, y, loss].forEach((a) => a.dispose());
  };
  await run(2);
  const before = new Set(pipelineKeys());
  await run(5);
  assert.deepEqual(pipelineKeys().filter((k) => !before.has(k)), []);
  metrics.dispose();
});
