import {
  add,
  backward,
  matmul,
  mean,
  mul,
  noGrad,
  poolStats,
  relu,
  reshape,
  Rng,
  scope,
  sum,
  tensor,
} from "../mod.ts";
import { checkOp, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

Deno.test("composite mean(relu(x·W + b) * y) through the whole tape", async () => {
  const [n, k, m] = [3, 5, 7];
  await checkOp({
    name: "composite",
    shapes: [[n, k], [k, m], [m], [n, m]],
    gpu: ([x, w, b, y]) => mean(mul(relu(add(matmul(x, w), b)), y)),
    cpu: ([x, w, b, y]) => {
      let s = 0;
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < m; j++) {
          let z = b[j];
          for (let q = 0; q < k; q++) z += x[i * k + q] * w[q * m + j];
          s += Math.max(z, 0) * y[i * m + j];
        }
      }
      return Float64Array.of(s / (n * m));
    },
  });
});

Deno.test("an input used twice gets both contributions; reshape passes gradients", async () => {
  await checkOp({
    name: "x*x+x",
    shapes: [[2, 6]],
    gpu: ([x]) => reshape(add(mul(x, x), x), [3, 4]),
    cpu: ([x]) => x.map((v) => v * v + v),
  });
});

Deno.test("gradients accumulate over two backward calls", async () => {
  const x = tensor([1, 2, 3], [3], { requiresGrad: true });
  scope(() => sum(mul(x, x)).backward());
  scope(() => sum(mul(x, x)).backward());
  assert.deepEqual([...await x.grad!.toArray()], [4, 8, 12]);
  x.dispose();
});

Deno.test("noGrad records nothing", () => {
  const x = tensor([1, 2], [2], { requiresGrad: true });
  const y = noGrad(() => mul(x, x));
  assert.equal(y.requiresGrad, false);
  assert.equal(y.node, null);
  assert.throws(() => y.backward(), /does not require grad/);
  x.dispose();
  y.dispose();
});

Deno.test("a training-like step returns the pool to its baseline", async () => {
  const rng = new Rng(7);
  const w = tensor(Float32Array.from({ length: 20 }, () => rng.normal()), [5, 4], { requiresGrad: true });
  const x = tensor(Float32Array.from({ length: 15 }, () => rng.normal()), [3, 5]);
  // first step allocates w.grad, which persists
  scope(() => mean(relu(matmul(x, w))).backward());
  const baseline = poolStats().bytesInUse;
  for (let i = 0; i < 3; i++) {
    const loss = scope(() => {
      const l = mean(relu(matmul(x, w)));
      l.backward();
      return l;
    });
    await loss.item();
    loss.dispose();
    assert.equal(poolStats().bytesInUse, baseline, `step ${i} leaked`);
  }
  w.dispose();
  x.dispose();
});

Deno.test("backward of a non-scalar needs the upstream gradient; shapes are checked", () => {
  const x = tensor([1, 2, 3, 4], [2, 2], { requiresGrad: true });
  const y = mul(x, x);
  assert.throws(() => y.backward(), /is not a scalar; pass the upstream gradient/);
  assert.throws(() => backward(y, tensor([1, 1], [2])), /gradient \[2\] does not match/);
});

Deno.test("a disposed tensor cannot be used", () => {
  const x = tensor([1, 2], [2]);
  x.dispose();
  assert.throws(() => add(x, x), /used after dispose/);
});
