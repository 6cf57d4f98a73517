// The registry sweep (tests/registry_sweep.ts) of the convolution family: conv2d, the pointwise MLP and
// the depthwise conv + GroupNorm, every variant of every pass under both adapter profiles; and the
// direct convolution and the patches kernels at two batch sizes (one pipeline serves both).

import { empty, Rng, tensor } from "../mod.ts";
import { convBackwardInput, convBackwardWeight, convForward } from "../kernels/conv.ts";
import { gatherPatches, type PatchShape, scatterPatches } from "../kernels/patches.ts";
import { pipelineKeys } from "../kernels/runtime.ts";
import * as convRef from "../kernels/reference/conv.ts";
import type { ConvShape } from "../kernels/shapes.ts";
import { assertClose, randomArray, setup } from "./helpers.ts";
import { CONV_OPS, registerSweeps } from "./registry_sweep.ts";
import assert from "node:assert/strict";

await setup();

registerSweeps((op) => CONV_OPS.has(op));

/** The direct convolution's three passes of `s` = the references. */
async function directPasses(s: ConvShape): Promise<void> {
  const rng = new Rng(s.n);
  const x = randomArray(rng, s.n * s.c * s.h * s.w), w = randomArray(rng, (s.o * s.c / s.groups) * s.k * s.k);
  const b = randomArray(rng, s.o), dy = randomArray(rng, s.n * s.o * s.oh * s.ow);
  const t = [x, w, b, dy].map((a) => tensor(Float32Array.from(a)));
  const y = empty([dy.length]), dx = empty([x.length]), dw = empty([w.length]);
  const v = "direct/blocked";
  convForward(t[0].binding(), t[1].binding(), t[2].binding(), y.binding(), s, v);
  convBackwardInput(t[3].binding(), t[1].binding(), dx.binding(), s, v);
  convBackwardWeight(t[3].binding(), t[0].binding(), dw.binding(), s, v);
  const name = `direct ${JSON.stringify(s)}`;
  assertClose(await y.toArray(), convRef.conv2dRef(x, w, b, s), {}, `${name} forward`);
  assertClose(await dx.toArray(), convRef.conv2dBackwardInputRef(dy, w, s), {}, `${name} input gradient`);
  assertClose(await dw.toArray(), convRef.conv2dBackwardWeightRef(dy, x, s), {}, `${name} weight gradient`);
  [...t, y, dx, dw].forEach((a) => a.dispose());
}

/** Patches of k×k with stride `stride` gathered from x [n, c, h, w], and scattered back, = the CPU's. */
async function patchesPasses(s: PatchShape): Promise<void> {
  const rng = new Rng(s.n);
  const x = randomArray(rng, s.n * s.c * s.h * s.w),
    g = randomArray(rng, s.n * s.c * s.k * s.k * s.oh * s.ow);
  const y = new Float64Array(g.length), gx = new Float64Array(x.length);
  for (let n = 0; n < s.n; n++) {
    for (let c = 0; c < s.c; c++) {
      for (let kh = 0; kh < s.k; kh++) {
        for (let kw = 0; kw < s.k; kw++) {
          for (let i = 0; i < s.oh; i++) {
            for (let j = 0; j < s.ow; j++) {
              const yi = (((n * s.c + c) * s.k + kh) * s.k + kw) * s.oh * s.ow + i * s.ow + j;
              const xi = ((n * s.c + c) * s.h + i * s.stride + kh) * s.w + j * s.stride + kw;
              y[yi] = x[xi];
              gx[xi] = g[yi];
            }
          }
        }
      }
    }
  }
  const [tx, tg] = [x, g].map((a) => tensor(Float32Array.from(a)));
  const ty = empty([y.length]), tgx = empty([x.length]);
  gatherPatches(tx.binding(), ty.binding(), s);
  scatterPatches(tg.binding(), tgx.binding(), s);
  assertClose(await ty.toArray(), y, {}, `patches gather ${JSON.stringify(s)}`);
  assertClose(await tgx.toArray(), gx, {}, `patches scatter ${JSON.stringify(s)}`);
  [tx, tg, ty, tgx].forEach((a) => a.dispose());
}

Deno.test("direct convolution and patches at two batch sizes: the references, no new pipeline for the second", async () => {
  const run = async (n: number) => {
    await directPasses(convRef.convShape([n, 3, 9, 9], 4, 3, 1, 1, 1));
    await directPasses(convRef.convShape([n, 4, 8, 8], 6, 3, 2, 1, 2));
    await directPasses(convRef.convShape([n, 3, 5, 5], 2, 1, 1, 0, 1));
    await patchesPasses({ n, c: 3, h: 8, w: 8, k: 2, stride: 2, oh: 4, ow: 4 });
    await patchesPasses({ n, c: 2, h: 7, w: 7, k: 1, stride: 2, oh: 4, ow: 4 });
  };
  await run(2);
  const before = new Set(pipelineKeys());
  await run(5);
  const fresh = pipelineKeys().filter((k) => !before.has(k));
  assert.deepEqual(fresh.filter((k) => /^(conv_|patches_)/.test(k)), []);
});
