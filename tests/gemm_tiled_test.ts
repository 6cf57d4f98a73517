// The workgroup-tiled GEMM (kernels/gemm_tiled.ts) at the kernel level, against the f64 CPU reference on
// odd shapes: every transpose, batch 1 and 3 with shared operands, sumBatch, a row bias, operands at an
// offset, each tile and several split-K factors (the planner runs only the default tile: its forward and
// backward through autograd are in tests/registry.ts); and the reference backward against finite
// differences.

import { empty, poolStats, Rng, type Tensor, tensor } from "../mod.ts";
import {
  checkGemmTile,
  GEMM_TILES,
  gemmSplitK,
  type GemmTile,
  gemmTile,
  matmulTiled,
} from "../kernels/gemm_tiled.ts";
import { checked, pipelineKeys } from "../kernels/runtime.ts";
import type { MatmulDims } from "../kernels/shapes.ts";
import { matmulBackwardRef, matmulOutLength, matmulRef } from "../kernels/reference/matmul.ts";
import { assertClose, finiteDiff, randomArray, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

const TOL = { rtol: 1e-4, atol: 1e-4 };

/** Random values already rounded to f32, so the f64 reference sees exactly what the GPU sees. */
function f32Values(rng: Rng, n: number): Float64Array {
  return Float64Array.from(Float32Array.from(randomArray(rng, n)));
}

const upload = (a: Float64Array): Tensor => tensor(Float32Array.from(a));

function dims(
  m: number,
  n: number,
  k: number,
  more: Partial<MatmulDims> = {},
): MatmulDims {
  return { batch: 1, m, n, k, transA: false, transB: false, batchA: true, batchB: true, ...more };
}

/** Runs matmulTiled on random operands and compares C with matmulRef. */
async function check(
  name: string,
  d: MatmulDims,
  opts: { tile?: GemmTile; splitK?: number; bias?: boolean } = {},
  seed = 1,
): Promise<void> {
  const rng = new Rng(seed);
  const a = f32Values(rng, (d.batchA ? d.batch : 1) * d.m * d.k);
  const b = f32Values(rng, (d.batchB ? d.batch : 1) * d.k * d.n);
  const bias = opts.bias ? f32Values(rng, d.m) : undefined;
  const before = poolStats().bytesInUse;
  const ta = upload(a), tb = upload(b), tbias = bias ? upload(bias) : null;
  const tc = empty([matmulOutLength(d)]);
  await checked(name, () =>
    matmulTiled(ta.binding(), tb.binding(), tc.binding(), d, {
      tile: opts.tile,
      splitK: opts.splitK,
      rowBias: tbias?.binding(),
    }));
  assertClose(await tc.toArray(), matmulRef(a, b, d, bias), TOL, name);
  for (const t of [ta, tb, tc, tbias]) t?.dispose();
  assert.equal(poolStats().bytesInUse, before, `${name}: buffers left in use`);
}

const tiles = Object.entries(GEMM_TILES) as [string, GemmTile][];

Deno.test("gemm/tiled: odd sizes, every transpose, each tile (scalar loads)", async () => {
  for (const [tn, tile] of tiles) {
    for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]]) {
      for (const [m, n, k] of [[5, 7, 9], [37, 70, 19]]) {
        await check(`${tn} ${m}x${n}x${k} tA=${tA} tB=${tB}`, dims(m, n, k, { transA: tA, transB: tB }), {
          tile,
        });
      }
    }
  }
});

Deno.test("gemm/tiled: vec4 operands (multiples of 4, partial tiles), mixed with scalar ones", async () => {
  // [m, n, k]: all multiples of 4; then only some, so that A, B and C pick vec4 or scalar separately
  for (const [m, n, k] of [[68, 36, 20], [12, 10, 8], [9, 12, 16], [20, 7, 12]]) {
    for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]]) {
      await check(`${m}x${n}x${k} tA=${tA} tB=${tB}`, dims(m, n, k, { transA: tA, transB: tB }), {
        tile: GEMM_TILES.t32,
      });
    }
  }
  await check("t64 132x136x40", dims(132, 136, 40), { tile: GEMM_TILES.t64 });
});

Deno.test("gemm/tiled: operands and result as slices at a 256-byte offset (vec4 and scalar)", async () => {
  const rng = new Rng(2);
  const slice = (t: Tensor, floats: number) => {
    const b = t.binding();
    const buf = b instanceof GPUBuffer ? b : b.buffer, at = b instanceof GPUBuffer ? 0 : b.offset ?? 0;
    return { buffer: buf, offset: at + 256, size: floats * 4 };
  };
  for (const [m, n, k] of [[12, 8, 16], [5, 7, 9]]) {
    const d = dims(m, n, k, { transB: true });
    const a = f32Values(rng, m * k), b = f32Values(rng, n * k);
    const pad = new Float64Array(64).fill(7);
    const ta = upload(Float64Array.from([...pad, ...a])), tb = upload(Float64Array.from([...pad, ...b]));
    const tc = empty([64 + m * n]);
    await checked("slices", () => matmulTiled(slice(ta, m * k), slice(tb, n * k), slice(tc, m * n), d));
    const got = (await tc.toArray()).slice(64);
    assertClose(got, matmulRef(a, b, d), TOL, `slices ${m}x${n}x${k}`);
    for (const t of [ta, tb, tc]) t.dispose();
  }
});

Deno.test("gemm/tiled: batch 3, shared A or B", async () => {
  for (const [bA, bB] of [[true, true], [true, false], [false, true]]) {
    for (const [tA, tB] of [[false, false], [true, true]]) {
      await check(
        `batch 3 bA=${bA} bB=${bB} tA=${tA} tB=${tB}`,
        dims(13, 9, 11, { batch: 3, batchA: bA, batchB: bB, transA: tA, transB: tB }),
        { tile: GEMM_TILES.t32 },
      );
    }
  }
  await check("batch 3 vec4", dims(8, 12, 16, { batch: 3, batchB: false }), { tile: GEMM_TILES.t64 });
});

Deno.test("gemm/tiled: sumBatch, row bias", async () => {
  for (const [tA, tB] of [[false, true], [true, false], [false, false]]) {
    await check(
      `sumBatch 3 tA=${tA} tB=${tB}`,
      dims(6, 10, 7, { batch: 3, sumBatch: true, transA: tA, transB: tB }),
    );
  }
  await check("sumBatch vec4", dims(12, 8, 20, { batch: 3, sumBatch: true, transB: true }));
  await check("row bias", dims(9, 11, 5), { bias: true });
  await check("row bias vec4 batch 3", dims(12, 16, 8, { batch: 3, batchA: false }), { bias: true });
});

Deno.test("gemm/tiled-splitk: several split factors (K and batch×K), with bias and sumBatch", async () => {
  for (const s of [2, 3, 7, 100]) { // 100 is clamped to the number of BK steps
    await check(`splitK ${s} 11x13x150`, dims(11, 13, 150), { splitK: s, tile: GEMM_TILES.t32 });
    await check(
      `splitK ${s} sumBatch 3 weight-gradient layout`,
      dims(6, 5, 45, { batch: 3, sumBatch: true, transB: true }),
      { splitK: s, bias: true, tile: GEMM_TILES.t32 },
    );
  }
  await check("splitK 4 batch 3 (no sum)", dims(7, 9, 70, { batch: 3, batchB: false, transA: true }), {
    splitK: 4,
    bias: true,
  });
  await check("splitK 5 vec4 t128", dims(16, 20, 96, { transA: true }), { splitK: 5, tile: GEMM_TILES.t128 });
});

Deno.test("gemm reference backward = finite differences of the reference forward", () => {
  const rng = new Rng(3);
  for (
    const d of [
      dims(3, 4, 5, { batch: 2, batchB: false, transA: true }),
      dims(3, 2, 4, { batch: 3, sumBatch: true, transB: true }),
      dims(2, 3, 2, { batch: 2, batchA: false }),
    ]
  ) {
    const a = randomArray(rng, (d.batchA ? d.batch : 1) * d.m * d.k);
    const b = randomArray(rng, (d.batchB ? d.batch : 1) * d.k * d.n);
    const bias = randomArray(rng, d.m), dc = randomArray(rng, matmulOutLength(d));
    const [fa, fb, fbias] = finiteDiff(([x, y, z]) => matmulRef(x, y, d, z), [a, b, bias], dc);
    const got = matmulBackwardRef(a, b, dc, d);
    assertClose(got.da, fa, { rtol: 1e-6, atol: 1e-7 }, "dA");
    assertClose(got.db, fb, { rtol: 1e-6, atol: 1e-7 }, "dB");
    assertClose(got.dBias, fbias, { rtol: 1e-6, atol: 1e-7 }, "dBias");
  }
});

Deno.test("gemm tile and split-K choice", () => {
  for (const t of Object.values(GEMM_TILES)) checkGemmTile(t);
  assert.throws(() => checkGemmTile({ bm: 128, bn: 128, bk: 16, tm: 4, tn: 4 }), /1024 invocations/);
  // a weight gradient: O×C = 64×64, K = N·H·W = 64·32·32 summed over the batch: split
  const wg = dims(64, 64, 1024, { batch: 64, sumBatch: true, transB: true });
  const s = gemmSplitK(wg, gemmTile(wg));
  assert.ok(s > 1 && s <= 64, `split ${s}`);
  // a big forward GEMM fills the adapter without a split; a short K cannot be split
  assert.equal(gemmSplitK(dims(2048, 2048, 64)), 1);
  assert.equal(gemmSplitK(dims(8, 8, 16)), 1);
  const t = empty([1]);
  assert.throws(
    () => matmulTiled(t.binding(), t.binding(), t.binding(), dims(1, 1, 1), { splitK: 0 }),
    /splitK must be a positive integer/,
  );
  t.dispose();
});

Deno.test("gemm/tiled: batch 2 and 5 match the reference, the second batch creates no pipeline", async () => {
  // a 1×1 conv's per-image GEMMs: forward (shared A, row bias), input gradient (Aᵀ), and the weight
  // gradient summed over the images with the split the batch gives
  const round = async (batch: number) => {
    await check(`forward batch ${batch}`, dims(12, 16, 8, { batch, batchA: false }), { bias: true });
    await check(`input grad batch ${batch}`, dims(8, 16, 12, { batch, batchA: false, transA: true }));
    const wg = dims(12, 8, 16, { batch, sumBatch: true, transB: true });
    await check(`weight grad batch ${batch}`, wg, { splitK: gemmSplitK(wg) });
    await check(`weight grad batch ${batch} split 3`, wg, { splitK: 3 });
  };
  await round(2);
  const before = new Set(pipelineKeys());
  await round(5);
  const fresh = pipelineKeys().filter((k) => !before.has(k) && k.startsWith("gemm_tiled"));
  assert.deepEqual(fresh, [], "pipelines created for batch 5");
});
