// conv2d beyond tests/registry.ts (which checks every variant of every pass on odd shapes and the
// PyTorch fixtures): argument errors, and the software profile's default plan on layers large enough
// for the texture GEMM.

import { tensor } from "../mod.ts";
import { conv2d } from "../autograd/ops/conv.ts";
import { assertClose, setup } from "./helpers.ts";
import assert from "node:assert/strict";
import { startCapture, stopCapture } from "../kernels/runtime.ts";
import { setProfile } from "../kernels/profile.ts";
import { setPlanOverride } from "../kernels/planner.ts";
import * as convRef from "../kernels/reference/conv.ts";

await setup();

Deno.test("conv2d rejects bad shapes with clear errors", () => {
  const t = (shape: number[]) => tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
  const x = t([2, 6, 5, 5]);
  assert.throws(
    () => conv2d(x, t([4, 4, 3, 3])),
    /conv2d: input has 6 channels but the weight expects 4 in-channels × 1 group = 4 \(input \[2, 6, 5, 5\], weight \[4, 4, 3, 3\]\)/,
  );
  assert.throws(
    () => conv2d(x, t([4, 2, 3, 3]), null, { groups: 4 }),
    /conv2d: groups = 4 does not divide the 6 input channels/,
  );
  assert.throws(
    () => conv2d(x, t([5, 2, 3, 3]), null, { groups: 3 }),
    /conv2d: groups = 3 does not divide the 5 output channels/,
  );
  assert.throws(
    () => conv2d(x, t([4, 6, 9, 9]), null, { padding: 1 }),
    /conv2d: kernel 9×9 is larger than the padded input 7×7/,
  );
  assert.throws(() => conv2d(x, t([4, 6, 3, 3]), t([5])), /conv2d: bias must have shape \[4\].*bias \[5\]/);
  assert.throws(() => conv2d(t([6, 5, 5]), t([4, 6, 3, 3])), /conv2d: input must be 4-D \[N, C, H, W\]/);
  assert.throws(() => conv2d(x, t([4, 6, 3])), /conv2d: weight must be 4-D/);
  assert.throws(
    () => conv2d(x, t([4, 6, 3, 3]), null, { stride: 0 }),
    /conv2d: stride must be a positive integer/,
  );
});

for (const [n, c, o, hw, swaps] of [[2, 64, 68, 8, 0], [3, 64, 68, 4, 4]]) {
  Deno.test(`1×1 conv through the texture GEMM (${n}×${c}→${o} on ${hw}×${hw}) = CPU reference and gradients`, async () => {
    // every pass forced onto the texture GEMM (the software profile no longer picks it for convs); on
    // 4×4 images the forward and input gradient run as one GEMM over all images (transposed in and
    // out). Gradients are checked against the analytic CPU backward.
    setProfile("software");
    setPlanOverride(
      hw < 8
        ? "conv.forward=gemm1x1/columns-texture,conv.inputGrad=gemm1x1/columns-texture,conv.weightGrad=gemm1x1/texture"
        : "conv=gemm1x1/texture",
    );
    const p = hw * hw;
    const rand = (len: number, seed: number) =>
      Float32Array.from({ length: len }, (_, i) => Math.sin(seed * 1000 + i * 1.7));
    const xs = rand(n * c * p, 1), ws = rand(o * c, 2), bs = rand(o, 3), gs = rand(n * o * p, 4);
    const x = tensor(xs, [n, c, hw, hw], { requiresGrad: true });
    const w = tensor(ws, [o, c, 1, 1], { requiresGrad: true });
    const b = tensor(bs, [o], { requiresGrad: true });
    startCapture();
    const y = conv2d(x, w, b);
    y.backward(tensor(gs, [n, o, hw, hw]));
    const kernels = stopCapture().map((d) => d.label);
    setPlanOverride(null);
    setProfile(null);
    assert.equal(kernels.filter((k) => k === "matmul/texture").length, 3, `kernels: ${kernels}`);
    assert.equal(kernels.filter((k) => k === "gemm1x1/columns").length, swaps, `kernels: ${kernels}`);
    const s = convRef.convShape([n, c, hw, hw], o, 1);
    const [x64, w64, g64] = [xs, ws, gs].map((a) => Float64Array.from(a));
    const ey = convRef.conv2dRef(x64, w64, Float64Array.from(bs), s),
      ex = convRef.conv2dBackwardInputRef(g64, w64, s);
    const ew = convRef.conv2dBackwardWeightRef(g64, x64, s), eb = convRef.conv2dBackwardBiasRef(g64, s);
    const tol = { rtol: 1e-4, atol: 1e-4 };
    assertClose(await y.toArray(), ey, tol, "forward");
    assertClose(await x.grad!.toArray(), ex, tol, "input gradient");
    assertClose(await w.grad!.toArray(), ew, tol, "weight gradient");
    assertClose(await b.grad!.toArray(), eb, tol, "bias gradient");
    for (const t of [x, w, b, y]) t.dispose();
  });
}
