import { add, mul, relu, scale, sub, tensor } from "../mod.ts";
import { checkOp, setup } from "./helpers.ts";
import { addRef, mulRef, scaleRef, subRef } from "../kernels/reference/elementwise.ts";
import { reluRef } from "../kernels/reference/activation.ts";
import assert from "node:assert/strict";
import { rowChunks, rowsApply, vec4Applies } from "../kernels/elementwise.ts";

await setup();

const shapes: [number[], number[], number[]][] = [
  [[3, 5, 9, 9], [3, 5, 9, 9], [3, 5, 9, 9]], // same shape
  [[3, 5, 9, 9], [1, 5, 1, 1], [3, 5, 9, 9]], // per-channel (bias, layer scale)
  [[1, 7], [3, 1], [3, 7]], // both sides broadcast
  [[2, 3, 5], [5], [2, 3, 5]], // trailing vector
  // last axis a multiple of 4: the vec4 kernel, inputs whole along it or broadcast across it
  [[2, 3, 8], [2, 3, 8], [2, 3, 8]],
  [[2, 3, 8], [3, 1], [2, 3, 8]],
  [[2, 3, 8], [8], [2, 3, 8]],
  [[1, 8], [3, 1], [3, 8]],
  // last axis ≥ 16 with an input broadcast across it: the row-walking kernel (one chunk per row, four
  // chunks per row, and three chunks with a shorter last one)
  [[2, 3, 16], [3, 1], [2, 3, 16]],
  [[1, 2, 256], [2, 1], [1, 2, 256]],
  [[1, 2, 200], [1, 2, 1], [1, 2, 200]],
];

Deno.test("the vec4 elementwise kernel takes exactly the shapes whose last axis allows it", () => {
  const applies = (ins: number[][], out: number[]) => vec4Applies({ inputShapes: ins, outShape: out });
  assert.equal(applies([[2, 3, 8], [3, 1], [8], []], [2, 3, 8]), true);
  assert.equal(applies([[2, 3, 9]], [2, 3, 9]), false);
  assert.equal(applies([[2, 1, 8], [3, 2]], [2, 3, 8]), false);
  assert.equal(applies([[4, 1]], [4, 1]), false);
});

Deno.test("rows are walked where an input is broadcast across a long enough last axis, in chunks", () => {
  const rows = (ins: number[][], out: number[]) => rowsApply({ inputShapes: ins, outShape: out });
  assert.equal(rows([[2, 3, 16], [3, 1]], [2, 3, 16]), true);
  assert.equal(rows([[2, 3, 16], [2, 3, 16]], [2, 3, 16]), false); // nothing broadcast across it
  assert.equal(rows([[2, 3, 8], [3, 1]], [2, 3, 8]), false); // too short
  assert.equal(rows([[2, 3, 18], [3, 1]], [2, 3, 18]), false); // not vec4
  assert.deepEqual(rowChunks(2, 256), { chunks: 4, len: 64 });
  assert.deepEqual(rowChunks(2, 200), { chunks: 3, len: 68 });
  assert.deepEqual(rowChunks(4096, 1024), { chunks: 1, len: 1024 }); // rows enough to fill the adapter
  assert.deepEqual(rowChunks(1, 81), { chunks: 1, len: 81 });
});

for (const [sa, sb, so] of shapes) {
  Deno.test(`add/sub/mul ${sa} with ${sb}`, async () => {
    await checkOp({
      name: "add",
      shapes: [sa, sb],
      gpu: ([a, b]) => add(a, b),
      cpu: ([a, b]) => addRef(a, sa, b, sb, so),
    });
    await checkOp({
      name: "sub",
      shapes: [sa, sb],
      gpu: ([a, b]) => sub(a, b),
      cpu: ([a, b]) => subRef(a, sa, b, sb, so),
    });
    await checkOp({
      name: "mul",
      shapes: [sa, sb],
      gpu: ([a, b]) => mul(a, b),
      cpu: ([a, b]) => mulRef(a, sa, b, sb, so),
    });
  });
}

Deno.test("scale and relu on an odd shape", async () => {
  await checkOp({
    name: "scale",
    shapes: [[3, 7, 9]],
    gpu: ([x]) => scale(x, -2.5),
    cpu: ([x]) => scaleRef(x, -2.5),
  });
  // keep inputs away from 0 where relu is not differentiable (finite differences would straddle the kink)
  await checkOp({
    name: "relu",
    shapes: [[1, 5, 9, 9]],
    gpu: ([x]) => relu(x),
    cpu: ([x]) => reluRef(x),
    init: (rng, s) =>
      Float64Array.from(
        { length: s.reduce((a, b) => a * b) },
        () => (rng.uniform() < 0.5 ? -1 : 1) * (0.1 + rng.uniform()),
      ),
  });
});

Deno.test("relu gradient at exactly 0 is 0 (as PyTorch)", async () => {
  const x = tensor([-1, 0, 2], [3], { requiresGrad: true });
  relu(x).backward(tensor([5, 5, 5]));
  assert.deepEqual([...await x.grad!.toArray()], [0, 0, 5]);
});

Deno.test("mismatched shapes give a clear error", () => {
  const a = tensor(new Float32Array(6), [2, 3]), b = tensor(new Float32Array(8), [2, 4]);
  assert.throws(() => add(a, b), /add: shapes \[2, 3\] and \[2, 4\] cannot be broadcast/);
});
