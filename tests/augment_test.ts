// The GPU augmentation kernel at two batch sizes (the training batch and the partial last batch): equal
// to the CPU reference bit for bit, and one pipeline for both. Its other checks: tests/data_test.ts.

import { augmentCpu, augmentGpu, drawAugmentParams } from "../data/augment.ts";
import { IMAGE_BYTES } from "../data/cifar10_spec.ts";
import { pipelineKeys } from "../kernels/runtime.ts";
import { Rng } from "../mod.ts";
import { setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

/** Augments `n` random images on the GPU and asserts the CPU reference's bits. */
async function augmentMatches(n: number): Promise<void> {
  const rng = new Rng(n);
  const images = Uint8Array.from({ length: n * IMAGE_BYTES }, () => rng.int(256));
  const params = drawAugmentParams(rng, n);
  const x = augmentGpu(images, n, params);
  const got = new Uint32Array((await x.toArray()).buffer);
  x.dispose();
  const want = new Uint32Array(augmentCpu(images, n, params).buffer);
  const bad = want.findIndex((w, i) => got[i] !== w);
  assert.equal(bad, -1, `${n} images: element ${bad} differs from the CPU reference`);
}

Deno.test("augment at two batch sizes: bit for bit the reference, one pipeline serves both", async () => {
  await augmentMatches(4);
  const before = new Set(pipelineKeys());
  await augmentMatches(3);
  assert.deepEqual(pipelineKeys().filter((k) => !before.has(k)), []);
});
