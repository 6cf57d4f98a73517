// linear beyond tests/registry.ts (every matmul variant, with and without bias, 2-D and 3-D input, and
// the PyTorch fixture): shape errors; and stochastic depth.

import { linear } from "../autograd/ops/linear.ts";
import { stochasticDepth } from "../autograd/ops/stochastic.ts";
import { Rng, tensor } from "../mod.ts";
import { assertClose, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

Deno.test("linear rejects mismatched shapes", () => {
  const x = tensor(new Float32Array(6), [2, 3]), w = tensor(new Float32Array(8), [2, 4]);
  const b = tensor(new Float32Array(3), [3]), w2 = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => linear(x, w), /linear: input \[2, 3\] does not match weight \[2, 4\]/);
  assert.throws(() => linear(x, w2, b), /linear: bias \[3\] does not match weight \[2, 3\]/);
  [x, w, b, w2].forEach((t) => t.dispose());
});

Deno.test("stochasticDepth: identity in eval or with p = 0", () => {
  const x = tensor([1, 2, 3], [3], { requiresGrad: true });
  const rng = new Rng(1);
  const state = rng.getState();
  assert.equal(stochasticDepth(x, 0.5, false, rng), x);
  assert.equal(stochasticDepth(x, 0, true, rng), x);
  assert.deepEqual(rng.getState(), state, "no draw when the op is the identity");
  assert.throws(() => stochasticDepth(x, 1.5, true, rng), /drop probability must be in \[0, 1\], got 1.5/);
  x.dispose();
});

Deno.test("stochasticDepth: batch mode drops or scales the whole branch, seeded", async () => {
  const p = 0.3;
  const rng = new Rng(42), ref = new Rng(42);
  let dropped = 0, kept = 0;
  for (let i = 0; i < 40; i++) {
    const x = tensor([1, -2, 3, 4, 0.5, 6], [2, 3], { requiresGrad: true });
    const y = stochasticDepth(x, p, true, rng);
    const keep = ref.uniform() < 1 - p; // the same draw torchvision makes: bernoulli(1 − p)
    const f = keep ? 1 / (1 - p) : 0;
    assertClose(await y.toArray(), [1, -2, 3, 4, 0.5, 6].map((v) => v * f), { rtol: 1e-6 });
    y.backward(tensor([1, 1, 1, 1, 1, 1], [2, 3]));
    assertClose(await x.grad!.toArray(), new Array(6).fill(f), { rtol: 1e-6 });
    if (keep) kept++;
    else dropped++;
    [x, y].forEach((t) => t.dispose());
  }
  assert.ok(dropped > 0 && kept > dropped, `dropped ${dropped}, kept ${kept}`);
  const x = tensor([1, 2], [2]);
  const z = stochasticDepth(x, 1, true, rng);
  assert.deepEqual([...await z.toArray()], [0, 0]);
  [x, z].forEach((t) => t.dispose());
});
