// GEMM store epilogues (kernels/epilogue.ts) on the texture and the tiled GEMM, against the f64
// references: C = gelu(A·B + bias) with and without pre, and C = (A·B) · gelu'(P); vec4 and scalar
// stores, batches, transposes; and the combinations the kernels refuse.

import assert from "node:assert/strict";
import { empty, Rng, tensor } from "../mod.ts";
import { matmul } from "../kernels/matmul.ts";
import { matmulTiled } from "../kernels/gemm_tiled.ts";
import { startCapture, stopCapture } from "../kernels/runtime.ts";
import { matmulRef } from "../kernels/reference/matmul.ts";
import { gelu64, geluGrad64 } from "../kernels/reference/activation.ts";
import type { MatmulDims } from "../kernels/shapes.ts";
import { assertClose, randomArray, setup } from "./helpers.ts";

await setup();

// [batch, m, n, k, transA, transB]: n % 4 = 0 gives vec4 stores, n = 6 with transB scalar ones; all
// have k % 4 = 0 so the texture kernel takes them
const CASES = [
  [2, 12, 8, 16, false, false],
  [1, 7, 6, 8, false, true],
  [3, 8, 12, 4, true, false],
] as const;

for (const [batch, m, n, k, transA, transB] of CASES) {
  const d: MatmulDims = { batch, m, n, k, transA, transB, batchA: false, batchB: true };
  for (const variant of ["matmul/texture", "matmul/tiled"]) {
    Deno.test(`epilogues on ${variant}: batch ${batch}, ${m}×${n}×${k}, transA ${transA}, transB ${transB}`, async () => {
      const rng = new Rng(m * n + k);
      const a64 = randomArray(rng, m * k),
        b64 = randomArray(rng, batch * k * n),
        bias64 = randomArray(rng, m);
      const p64 = randomArray(rng, batch * m * n, 3);
      const pre64 = matmulRef(a64, b64, d, bias64), plain64 = matmulRef(a64, b64, d);
      const [a, b, bias, p] = [a64, b64, bias64, p64].map((x) => tensor(Float32Array.from(x)));
      const out = empty([batch * m * n]), pre = empty([batch * m * n]);
      const label = variant === "matmul/tiled" ? "gemm/tiled" : variant;
      const ran = (fn: () => void) => {
        startCapture();
        fn();
        assert.deepEqual(stopCapture().map((c) => c.label), [label]);
      };
      ran(() =>
        matmul(a.binding(), b.binding(), out.binding(), d, {
          variant,
          rowBias: bias.binding(),
          epilogue: { gelu: { pre: pre.binding() } },
        })
      );
      assertClose(await pre.toArray(), pre64, {}, "pre");
      assertClose(await out.toArray(), pre64.map(gelu64), {}, "gelu(pre)");
      ran(() => matmul(a.binding(), b.binding(), out.binding(), d, { variant, epilogue: { gelu: {} } }));
      assertClose(await out.toArray(), plain64.map(gelu64), {}, "gelu without bias or pre");
      ran(() =>
        matmul(a.binding(), b.binding(), out.binding(), d, { variant, epilogue: { geluGradOf: p.binding() } })
      );
      assertClose(await out.toArray(), plain64.map((v, i) => v * geluGrad64(p64[i])), {}, "times gelu'(p)");
      [a, b, bias, p, out, pre].forEach((t) => t.dispose());
    });
  }
}

Deno.test("epilogues: refused with a split reduction, or both kinds at once", () => {
  // k = 256: 16 steps of the 32×32 tile's BK = 16, enough to split in 4
  const a = tensor(new Float32Array(4 * 256)), b = tensor(new Float32Array(256 * 16)), c = empty([64]);
  const d: MatmulDims = {
    batch: 1,
    m: 4,
    n: 16,
    k: 256,
    transA: false,
    transB: false,
    batchA: false,
    batchB: false,
  };
  const ep = { gelu: {} };
  assert.throws(
    () => matmulTiled(a.binding(), b.binding(), c.binding(), d, { splitK: 4, epilogue: ep }),
    /unsplit/,
  );
  const both = { gelu: {}, geluGradOf: c.binding() };
  assert.throws(() => matmul(a.binding(), b.binding(), c.binding(), d, { epilogue: both }), /exclude/);
  [a, b, c].forEach((t) => t.dispose());
});
