// The adapter profile: which profile an adapter name and host backend get, and what each one changes.

import assert from "node:assert/strict";
import {
  adapterProfile,
  gemmBlockEdge,
  isSoftwareAdapter,
  profileFor,
  setProfile,
  setProfileTuning,
  setTestProfileTuning,
} from "../kernels/profile.ts";
import { gpu } from "../kernels/runtime.ts";
import { setup } from "./helpers.ts";

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
  assert.deepEqual(vk.fusionsOff, ["depthwise-weight-tree"]);
  assert.ok(vk.depthwiseTextures);
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

Deno.test("adapter profile: CONVNEXT_PROFILE-style tuning changes the detected profile's knobs only", async () => {
  await setup();
  const detected = profileFor(gpu().adapterName, gpu().isFallbackAdapter);
  const before = adapterProfile(); // with the test task's CONVNEXT_TEST_PROFILE knobs, where set
  try {
    setProfileTuning("gemmBlockEdge=12, columnsBelowPixels=100");
    assert.equal(adapterProfile().gemmBlockEdge, 12);
    assert.equal(adapterProfile().columnsBelowPixels, 100);
    assert.equal(adapterProfile().blockEdge, detected.blockEdge);
    assert.equal(gemmBlockEdge(64), 12);
    assert.equal(gemmBlockEdge(6), 8); // clamped to the dimension, rounded up to 4
    // a forced profile is used as given
    setProfile("software");
    assert.equal(adapterProfile().gemmBlockEdge, 32);
    setProfile(null);
    assert.equal(adapterProfile().gemmBlockEdge, 12);
    for (const bad of ["gemmBlockEdge=10", "gemmBlockEdge=128", "blockEdge", "edge=8", "blockEdge=8=8"]) {
      assert.throws(() => setProfileTuning(bad), /profile tuning/, bad);
    }
    assert.equal(adapterProfile().gemmBlockEdge, 12, "a rejected spec changes nothing");
  } finally {
    setProfile(null);
    setProfileTuning(null);
  }
  assert.deepEqual(adapterProfile(), before);
});

Deno.test("adapter profile: CONVNEXT_TEST_PROFILE-style knobs apply to software adapters only", async () => {
  await setup();
  const detected = profileFor(gpu().adapterName, gpu().isFallbackAdapter);
  try {
    setProfileTuning(null); // the explicit knobs (CONVNEXT_PROFILE) would win
    setTestProfileTuning("gemmBlockEdge=12");
    const want = detected.kind === "software" ? 12 : detected.gemmBlockEdge;
    assert.equal(adapterProfile().gemmBlockEdge, want);
    // the explicit knobs win over the test ones
    setProfileTuning("gemmBlockEdge=20");
    assert.equal(adapterProfile().gemmBlockEdge, 20);
    assert.throws(() => setTestProfileTuning("gemmBlockEdge=10"), /profile tuning/);
  } finally {
    setTestProfileTuning(null);
    setProfileTuning(null);
  }
  assert.deepEqual(adapterProfile(), detected);
});

Deno.test("adapter profile: every adapter-dependent constant of the kernels is a profile field", () => {
  for (
    const p of [profileFor("llvmpipe"), profileFor("NVIDIA H200"), profileFor("google swiftshader", true)]
  ) {
    assert.equal(p.convWorkgroup % 8, 0);
    assert.ok(p.directPixels >= 1 && p.textureTuning.minThreads >= 1);
    assert.ok(p.depthwiseBlock.rows >= 1 && p.depthwiseBlock.cols >= 1);
    assert.ok(p.directWeightBlock.inChannels >= 1 && p.columnsTextureMin.rows >= 1);
  }
});
