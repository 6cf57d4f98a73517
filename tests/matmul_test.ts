// matmul beyond tests/registry.ts (every variant of matmul and linear, forward and both gradients,
// on odd, batched, shared and transposed operands): the shape error, and the kernel's sumBatch mode.

import { empty, matmul, Rng, tensor } from "../mod.ts";
import { matmul as matmulKernel, type MatmulDims } from "../kernels/matmul.ts";
import { matmulVariants } from "../kernels/planner.ts";
import { pipelineKeys, startCapture, stopCapture } from "../kernels/runtime.ts";
import { assertClose, setup } from "./helpers.ts";
import { matmulRef } from "../kernels/reference/matmul.ts";
import assert from "node:assert/strict";

await setup();

Deno.test("matmul rejects mismatched inner sizes", () => {
  const a = tensor(new Float32Array(6), [2, 3]), b = tensor(new Float32Array(8), [4, 2]);
  assert.throws(() => matmul(a, b), /matmul: shapes \[2, 3\] and \[4, 2\] do not match/);
});

Deno.test("matmul kernel with sumBatch: C = Σ_b op(A[b])·op(B[b]) on every variant that takes it", async () => {
  const rng = new Rng(5);
  // [m, n, k, transA, transB]: k % 4 = 0 also lets the texture kernel take it, k = 7 does not
  const cases = [[12, 8, 16, false, true], [8, 12, 8, true, false], [5, 6, 7, false, true]] as const;
  for (const [m, n, k, transA, transB] of cases) {
    const batch = 3;
    const d = { batch, m, n, k, transA, transB, batchA: true, batchB: true, sumBatch: true };
    const a = Float64Array.from({ length: batch * m * k }, () => rng.uniform() - 0.5);
    const b = Float64Array.from({ length: batch * k * n }, () => rng.uniform() - 0.5);
    const want = matmulRef(a, b, d);
    const variants = matmulVariants(d);
    assert.deepEqual(variants.includes("matmul/texture"), k % 4 === 0);
    for (const variant of variants) {
      const ta = tensor(Float32Array.from(a)), tb = tensor(Float32Array.from(b)), tc = empty([m, n]);
      startCapture();
      matmulKernel(ta.binding(), tb.binding(), tc.binding(), d, { variant });
      const ran = stopCapture().map((c) => c.label);
      assert.deepEqual(ran, [variant === "matmul/tiled" ? "gemm/tiled" : variant], `${variant} ran`);
      assertClose(await tc.toArray(), want, {}, `sumBatch ${m}x${n}x${k} ${variant}`);
      [ta, tb, tc].forEach((t) => t.dispose());
    }
  }
});

Deno.test("texture matmul with a shared A and per-image B folds the images into columns, edges included", async () => {
  const rng = new Rng(9);
  // [batch, m, n, k, transA]: n·batch not a multiple of the 8-column block, m below one row block
  const cases = [[5, 12, 4, 8, false], [3, 8, 16, 12, true], [2, 20, 12, 4, false], [
    4,
    4,
    8,
    16,
    true,
  ]] as const;
  for (const [batch, m, n, k, transA] of cases) {
    const d = { batch, m, n, k, transA, transB: false, batchA: false, batchB: true };
    const a = Float64Array.from({ length: m * k }, () => rng.uniform() - 0.5);
    const b = Float64Array.from({ length: batch * k * n }, () => rng.uniform() - 0.5);
    const bias = Float64Array.from({ length: m }, () => rng.uniform() - 0.5);
    const want = matmulRef(a, b, d);
    const withBias = want.map((v, i) => v + bias[Math.floor(i / n) % m]);
    for (const tuning of [{ rows: 16, colVecs: 2 }, { rows: 4, colVecs: 1, wgx: 2, wgy: 4 }]) {
      for (const rowBias of [false, true]) {
        const ta = tensor(Float32Array.from(a)), tb = tensor(Float32Array.from(b)), tc = empty([batch, m, n]);
        const tbias = tensor(Float32Array.from(bias));
        startCapture();
        matmulKernel(ta.binding(), tb.binding(), tc.binding(), d, {
          variant: "matmul/texture",
          tuning,
          rowBias: rowBias ? tbias.binding() : undefined,
        });
        assert.deepEqual(stopCapture().map((c) => c.label), ["matmul/texture"]);
        const what = `${batch}×${m}x${n}x${k}${transA ? " Aᵀ" : ""} rows ${tuning.rows}${
          rowBias ? " +bias" : ""
        }`;
        assertClose(await tc.toArray(), rowBias ? withBias : want, {}, what);
        [ta, tb, tc, tbias].forEach((t) => t.dispose());
      }
    }
  }
});

Deno.test("texture and generic matmuls at two batch sizes: the reference, and no new pipeline for the second", async () => {
  const rng = new Rng(9);
  // a linear layer's three products (m the batch, then k the batch), batched and summed ones
  const dims = (b: number): MatmulDims[] => [
    { batch: 1, m: b, n: 10, k: 16, transA: false, transB: true, batchA: false, batchB: false },
    { batch: 1, m: b, n: 16, k: 10, transA: false, transB: false, batchA: false, batchB: false },
    { batch: 1, m: 12, n: 16, k: b, transA: true, transB: false, batchA: false, batchB: false },
    { batch: b, m: 8, n: 12, k: 8, transA: false, transB: false, batchA: false, batchB: true },
    { batch: b, m: 8, n: 6, k: 4, transA: false, transB: true, batchA: true, batchB: true, sumBatch: true },
  ];
  const run = async (b: number) => {
    for (const d of dims(b)) {
      const a = Float64Array.from(
        { length: (d.batchA ? d.batch : 1) * d.m * d.k },
        () => rng.uniform() - 0.5,
      );
      const bb = Float64Array.from(
        { length: (d.batchB ? d.batch : 1) * d.k * d.n },
        () => rng.uniform() - 0.5,
      );
      const want = matmulRef(a, bb, d);
      for (const variant of matmulVariants(d).filter((v) => v !== "matmul/tiled")) {
        const ta = tensor(Float32Array.from(a)),
          tb = tensor(Float32Array.from(bb)),
          tc = empty([want.length]);
        matmulKernel(ta.binding(), tb.binding(), tc.binding(), d, { variant });
        assertClose(await tc.toArray(), want, {}, `${variant} ${JSON.stringify(d)}`);
        [ta, tb, tc].forEach((t) => t.dispose());
      }
    }
  };
  await run(4);
  const before = new Set(pipelineKeys());
  await run(8);
  assert.deepEqual(pipelineKeys().filter((k) => !before.has(k) && /^mm[tg]:/.test(k)), []);
});
