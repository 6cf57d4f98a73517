import { empty, matmul, matmulT, Rng, tensor } from "../mod.ts";
import { matmul as matmulKernel } from "../kernels/matmul.ts";
import { planMatmul } from "../kernels/planner.ts";
import { assertClose, checkOp, setup } from "./helpers.ts";
import { gemmRef } from "../kernels/reference/gemm.ts";
import assert from "node:assert/strict";

await setup();

/** CPU batched matmul with transposes (kernels/reference/gemm.ts). */
function cpuMM(
  a: Float64Array,
  b: Float64Array,
  d: { batch: number; m: number; n: number; k: number; bA: boolean; bB: boolean; tA?: boolean; tB?: boolean },
): Float64Array {
  const { batch, m, n, k } = d;
  return gemmRef(a, b, { batch, m, n, k, transA: !!d.tA, transB: !!d.tB, batchA: d.bA, batchB: d.bB });
}

Deno.test("matmul 2-D on odd sizes", async () => {
  for (const [m, k, n] of [[1, 1, 1], [5, 7, 3], [9, 13, 11], [17, 6, 33]]) {
    await checkOp({
      name: `matmul ${m}x${k}x${n}`,
      shapes: [[m, k], [k, n]],
      gpu: ([a, b]) => matmul(a, b),
      cpu: ([a, b]) => cpuMM(a, b, { batch: 1, m, n, k, bA: false, bB: false }),
    });
  }
});

Deno.test("matmul batched, with a shared operand", async () => {
  await checkOp({
    name: "bmm",
    shapes: [[3, 5, 7], [3, 7, 6]],
    gpu: ([a, b]) => matmul(a, b),
    cpu: ([a, b]) => cpuMM(a, b, { batch: 3, m: 5, n: 6, k: 7, bA: true, bB: true }),
  });
  await checkOp({
    name: "bmm shared B",
    shapes: [[3, 5, 7], [7, 6]],
    gpu: ([a, b]) => matmul(a, b),
    cpu: ([a, b]) => cpuMM(a, b, { batch: 3, m: 5, n: 6, k: 7, bA: true, bB: false }),
  });
  await checkOp({
    name: "bmm shared A",
    shapes: [[5, 7], [2, 7, 6]],
    gpu: ([a, b]) => matmul(a, b),
    cpu: ([a, b]) => cpuMM(a, b, { batch: 2, m: 5, n: 6, k: 7, bA: false, bB: true }),
  });
});

Deno.test("matmul with transposed operands", async () => {
  for (const [tA, tB] of [[true, false], [false, true], [true, true]]) {
    await checkOp({
      name: `matmul tA=${tA} tB=${tB}`,
      shapes: [tA ? [7, 5] : [5, 7], tB ? [6, 7] : [7, 6]],
      gpu: ([a, b]) => matmulT(a, b, { transA: tA, transB: tB }),
      cpu: ([a, b]) => cpuMM(a, b, { batch: 1, m: 5, n: 6, k: 7, bA: false, bB: false, tA, tB }),
    });
  }
});

Deno.test("matmul rejects mismatched inner sizes", () => {
  const a = tensor(new Float32Array(6), [2, 3]), b = tensor(new Float32Array(8), [4, 2]);
  assert.throws(() => matmul(a, b), /matmul: shapes \[2, 3\] and \[4, 2\] do not match/);
});

Deno.test("matmul texture kernel (sizes multiple of 4): every transpose, batched and shared operands", async () => {
  // k % 4 = 0 and m, n % 4 = 0 select the texture kernel; m = 12 and n = 20 leave partial 8×8 blocks
  for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]]) {
    await checkOp({
      name: `matmul texture tA=${tA} tB=${tB}`,
      shapes: [tA ? [3, 16, 12] : [3, 12, 16], tB ? [20, 16] : [16, 20]],
      gpu: ([a, b]) => matmulT(a, b, { transA: tA, transB: tB }),
      cpu: ([a, b]) => cpuMM(a, b, { batch: 3, m: 12, n: 20, k: 16, bA: true, bB: false, tA, tB }),
    });
  }
  // n not a multiple of 4 with B transposed still takes the texture kernel (scalar stores)
  await checkOp({
    name: "matmul texture n=7",
    shapes: [[9, 8], [7, 8]],
    gpu: ([a, b]) => matmulT(a, b, { transB: true }),
    cpu: ([a, b]) => cpuMM(a, b, { batch: 1, m: 9, n: 7, k: 8, bA: false, bB: false, tB: true }),
  });
});

Deno.test("matmul kernel with sumBatch: C = Σ_b op(A[b])·op(B[b]) on both kernels", async () => {
  const rng = new Rng(5);
  // [m, n, k, transA, transB]: k % 4 = 0 takes the texture kernel, k = 7 the generic one
  for (
    const [m, n, k, tA, tB] of [[12, 8, 16, false, true], [8, 12, 8, true, false], [
      5,
      6,
      7,
      false,
      true,
    ]] as const
  ) {
    const batch = 3;
    const a = Float64Array.from({ length: batch * m * k }, () => rng.uniform() - 0.5);
    const b = Float64Array.from({ length: batch * k * n }, () => rng.uniform() - 0.5);
    const want = gemmRef(a, b, {
      batch,
      m,
      n,
      k,
      transA: tA,
      transB: tB,
      batchA: true,
      batchB: true,
      sumBatch: true,
    });
    const ta = tensor(Float32Array.from(a)), tb = tensor(Float32Array.from(b)), tc = empty([m, n]);
    matmulKernel(ta.binding(), tb.binding(), tc.binding(), {
      batch,
      m,
      n,
      k,
      transA: tA,
      transB: tB,
      batchA: true,
      batchB: true,
      sumBatch: true,
    });
    assertClose(
      await tc.toArray(),
      want,
      {},
      `sumBatch ${m}x${n}x${k} (${
        planMatmul({ batch, m, n, k, transA: tA, transB: tB, batchA: true, batchB: true }).variant
      })`,
    );
    [ta, tb, tc].forEach((t) => t.dispose());
  }
});
