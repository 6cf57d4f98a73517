// The adapter profile: which profile an adapter name and host backend get, and what each one changes.

import assert from "node:assert/strict";
import { isSoftwareAdapter, profileFor } from "../kernels/profile.ts";

Deno.test("adapter profile: software adapters told apart from GPUs, per backend and implementation", () => {
  const lavapipe = "llvmpipe (LLVM 15.0.6, 256 bits)";
  assert.ok(isSoftwareAdapter(lavapipe));
  assert.ok(isSoftwareAdapter("Google SwiftShader"));
  assert.ok(isSoftwareAdapter("some adapter", true));
  assert.ok(!isSoftwareAdapter("NVIDIA H200"));

  const vk = profileFor(lavapipe, false, "vulkan"), gl = profileFor(lavapipe, false, "gl");
  assert.equal(vk.kind, "software");
  assert.equal(vk.blockEdge, 16);
  assert.equal(vk.gemmBlockEdge, 32);
  assert.equal(gl.gemmBlockEdge, 32);
  assert.deepEqual(vk.fusionsOff, []);
  assert.deepEqual(vk.variantsOff, []);
  // behind wgpu's GL backend the workgroup-tree weight gradient and the tiled depthwise never finish
  assert.deepEqual(gl.fusionsOff, ["depthwise-weight-tree"]);
  assert.deepEqual(gl.variantsOff, ["depthwise/tiled"]);

  // Chromium's SwiftShader compiles 16-wide register blocks too slowly: blocks of 8, whatever the
  // host backend; otherwise the software profile
  for (const b of ["", "vulkan", "gl"]) {
    const sw = profileFor("google swiftshader", true, b);
    assert.equal(sw.kind, "software");
    assert.equal(sw.blockEdge, 8);
    assert.equal(sw.gemmBlockEdge, 8);
    assert.deepEqual(sw.fusionsOff, []);
    assert.equal(sw.textureGemm, vk.textureGemm);
  }

  const g = profileFor("NVIDIA H200", false, "vulkan");
  assert.equal(g.kind, "gpu");
  assert.equal(g.gemmBlockEdge, 8);
  assert.ok(g.tiledDepthwise);
  assert.deepEqual(g.fusionsOff, []);
});
