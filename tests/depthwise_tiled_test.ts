// The halo-tiled depthwise kernels (kernels/depthwise_tiled.ts) at the kernel level, beyond the odd
// 9×9 and 8×8 shapes that tests/registry.ts runs through conv2d: several tiles per image, rectangular
// images, split weight gradients, other paddings, what the kernels support and the tile limits; and the
// CPU reference's backward (dense, grouped, depthwise, strided) against finite differences.

import { empty, poolStats, Rng, type Tensor, tensor } from "../mod.ts";
import {
  depthwiseTile,
  depthwiseTiledBackwardInput,
  depthwiseTiledBackwardWeight,
  depthwiseTiledForward,
  depthwiseTiledSupports,
} from "../kernels/depthwise_tiled.ts";
import { checked, pipelineKeys } from "../kernels/runtime.ts";
import * as convRef from "../kernels/reference/conv.ts";
import type { ConvShape } from "../kernels/shapes.ts";
import { assertClose, finiteDiff, randomArray, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

const TOL = { rtol: 1e-4, atol: 1e-4 };

function f32Values(rng: Rng, n: number): Float64Array {
  return Float64Array.from(Float32Array.from(randomArray(rng, n)));
}

const upload = (a: Float64Array): Tensor => tensor(Float32Array.from(a));

/** Runs the three passes on random data and compares each with the reference. */
async function check(name: string, s: ConvShape, bias: boolean, seed = 1): Promise<void> {
  const rng = new Rng(seed);
  const x = f32Values(rng, s.n * s.c * s.h * s.w), w = f32Values(rng, s.c * s.k * s.k);
  const b = bias ? f32Values(rng, s.c) : null, dy = f32Values(rng, s.n * s.c * s.oh * s.ow);
  const before = poolStats().bytesInUse;
  const tx = upload(x), tw = upload(w), tb = b ? upload(b) : null, tdy = upload(dy);
  const ty = empty([dy.length]), tdx = empty([x.length]), tdw = empty([w.length]);
  await checked(name, () => {
    depthwiseTiledForward(tx.binding(), tw.binding(), tb?.binding() ?? null, ty.binding(), s);
    depthwiseTiledBackwardInput(tdy.binding(), tw.binding(), tdx.binding(), s);
    depthwiseTiledBackwardWeight(tdy.binding(), tx.binding(), tdw.binding(), s);
  });
  assertClose(await ty.toArray(), convRef.conv2dRef(x, w, b, s), TOL, `${name} forward`);
  assertClose(await tdx.toArray(), convRef.conv2dBackwardInputRef(dy, w, s), TOL, `${name} input gradient`);
  assertClose(await tdw.toArray(), convRef.conv2dBackwardWeightRef(dy, x, s), TOL, `${name} weight gradient`);
  for (const t of [tx, tw, tb, tdy, ty, tdx, tdw]) t?.dispose();
  assert.equal(poolStats().bytesInUse, before, `${name}: buffers left in use`);
}

const dw = (n: number, c: number, h: number, w: number, k: number, pad = (k - 1) / 2) =>
  convRef.convShape([n, c, h, w], c, k, 1, pad, c);

Deno.test("depthwise/tiled: several tiles per image, rectangular, split weight gradient, other paddings", async () => {
  // 40×40: two 32×32 tiles per axis, and 12 weight-gradient steps in several chunks
  const big = dw(3, 3, 40, 40, 7);
  assert.equal(depthwiseTile(big, "forward")?.slabs, 1);
  await check("7x7 3x3x40x40", big, true);
  await check("7x7 2x5x9x20 (rectangular)", dw(2, 5, 9, 20, 7), false);
  await check("3x3 padding 0", dw(3, 5, 8, 8, 3, 0), true);
  await check("5x5 padding 4 (larger than the output needs)", dw(1, 7, 6, 6, 5, 4), true);
  await check("7x7 on 3x3 (image smaller than the filter)", dw(3, 5, 3, 3, 7), true);
  await check("3x3 padding 3 (input gradient padding −1)", dw(2, 3, 5, 5, 3, 3), false);
});

Deno.test("depthwise/tiled supports stride 1 depthwise only, and says so", () => {
  assert.ok(depthwiseTiledSupports(dw(64, 768, 4, 4, 7), "weight"));
  assert.ok(!depthwiseTiledSupports(convRef.convShape([1, 4, 9, 9], 4, 7, 2, 3, 4), "forward"), "stride 2");
  assert.ok(
    !depthwiseTiledSupports(convRef.convShape([1, 4, 9, 9], 8, 3, 1, 1, 4), "forward"),
    "multiplier 2",
  );
  assert.ok(!depthwiseTiledSupports(convRef.convShape([1, 4, 9, 9], 4, 3, 1, 1, 1), "input"), "dense");
  const t = empty([4 * 81]);
  assert.throws(
    () =>
      depthwiseTiledForward(
        t.binding(),
        t.binding(),
        null,
        t.binding(),
        convRef.convShape([1, 4, 9, 9], 4, 3, 2, 1, 4),
      ),
    /depthwise\/tiled: no forward kernel/,
  );
  t.dispose();
  // every tile fits 256 invocations and 16 KiB of workgroup memory
  for (const s of [dw(64, 96, 32, 32, 7), dw(1, 5, 9, 9, 7), dw(8, 3, 2, 2, 3), dw(1, 1, 64, 64, 15)]) {
    for (const pass of ["forward", "input", "weight"] as const) {
      const tl = depthwiseTile(s, pass)!;
      const th = tl.wy * tl.ry, tw = tl.wx * tl.rx, patch = (th + s.k - 1) * (tw + s.k - 1);
      const inv = tl.wx * tl.wy * tl.slabs;
      const floats = tl.slabs * (patch + (pass === "weight" ? th * tw : s.k * s.k)) + inv * tl.group;
      assert.ok(inv <= 256 && floats * 4 <= 16384, `${JSON.stringify(s)} ${pass}: ${JSON.stringify(tl)}`);
      assert.ok(pass !== "weight" || tl.group >= 1);
    }
  }
});

Deno.test("conv reference backward = finite differences (dense, grouped, depthwise, strided)", () => {
  const rng = new Rng(4);
  for (
    const s of [
      convRef.convShape([2, 3, 5, 5], 4, 3, 1, 1),
      convRef.convShape([1, 4, 6, 5], 6, 3, 2, 1, 2),
      convRef.convShape([2, 3, 7, 7], 3, 7, 1, 3, 3),
      convRef.convShape([1, 2, 6, 6], 2, 3, 2, 0, 2),
    ]
  ) {
    const x = randomArray(rng, s.n * s.c * s.h * s.w),
      w = randomArray(rng, s.o * (s.c / s.groups) * s.k * s.k);
    const b = randomArray(rng, s.o), dy = randomArray(rng, s.n * s.o * s.oh * s.ow);
    const [fx, fw, fb] = finiteDiff(([xx, ww, bb]) => convRef.conv2dRef(xx, ww, bb, s), [x, w, b], dy);
    const tol = { rtol: 1e-6, atol: 1e-7 };
    assertClose(convRef.conv2dBackwardInputRef(dy, w, s), fx, tol, "dx");
    assertClose(convRef.conv2dBackwardWeightRef(dy, x, s), fw, tol, "dw");
    assertClose(convRef.conv2dBackwardBiasRef(dy, s), fb, tol, "db");
  }
});

Deno.test("depthwise/tiled at two batch sizes: the references, and no new pipeline for the second", async () => {
  const shapes = (n: number) => [dw(n, 5, 9, 9, 7), dw(n, 5, 3, 3, 7), dw(n, 3, 40, 40, 7)];
  const run = async (n: number) => {
    for (const [i, s] of shapes(n).entries()) await check(`n=${n} shape ${i}`, s, i !== 1);
  };
  await run(2);
  const before = new Set(pipelineKeys());
  await run(5);
  assert.deepEqual(pipelineKeys().filter((k) => !before.has(k) && k.startsWith("dwt_")), []);
});
