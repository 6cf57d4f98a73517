import { add, checked, commandStats, gpu, pipelineCacheSize, poolStats, tensor } from "../mod.ts";
import {
  acquireBuffer,
  dispatch,
  initGPU,
  kernel,
  plannerContext,
  releaseBuffer,
  resetPlannerContext,
  sizeClass,
} from "../kernels/runtime.ts";
import { autotuneEnabled, planOverride, setAutotune, setPlanOverride } from "../kernels/planner.ts";
import { f32 } from "../kernels/wgsl.ts";
import { setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

Deno.test("adapter and features are reported", () => {
  const c = gpu();
  assert.ok(c.adapterName.length > 0);
  assert.equal(typeof c.features.timestampQuery, "boolean");
  assert.ok(c.limits.maxStorageBufferBindingSize >= 64 * 1024 * 1024);
});

Deno.test("pipelines are compiled once per key, the source generated only on a miss", () => {
  const src = "@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n" +
    "@compute @workgroup_size(1) fn main() { o[0] = 1.0; }";
  let generated = 0;
  const source = () => (generated++, src);
  const p1 = kernel("probe:1", "probe", source);
  const n = pipelineCacheSize();
  const p2 = kernel("probe:1", "probe", source);
  assert.equal(p1, p2);
  assert.equal(pipelineCacheSize(), n);
  // the tests run with the key check on: a hit regenerates the source to compare it with the cached one
  assert.equal(generated, 2);
  assert.throws(
    () => kernel("probe:1", "probe", () => src.replace("1.0", "2.0")),
    /Pipeline key "probe:1" \(probe\) maps to two different WGSL sources/,
  );
});

Deno.test("the buffer pool reuses buffers by size class and counts bytes", () => {
  assert.equal(sizeClass(1), 256);
  assert.equal(sizeClass(70000), 73728);
  const s0 = poolStats();
  const b = acquireBuffer(1000);
  assert.equal(poolStats().bytesInUse, s0.bytesInUse + 1024);
  releaseBuffer(b);
  assert.equal(poolStats().bytesInUse, s0.bytesInUse);
  const allocated = poolStats().bytesAllocated;
  const b2 = acquireBuffer(900);
  assert.equal(b2, b, "same size class is reused");
  assert.equal(poolStats().bytesAllocated, allocated);
  releaseBuffer(b2);
});

Deno.test("kernels are batched into one submit until readback", async () => {
  const a = tensor([1, 2, 3], [3]);
  const s0 = commandStats().submits;
  let x = a;
  for (let i = 0; i < 5; i++) x = add(x, a);
  assert.equal(commandStats().pendingDispatches, 5);
  assert.equal(commandStats().submits, s0);
  assert.deepEqual([...await x.toArray()], [6, 12, 18]);
  assert.equal(commandStats().submits, s0 + 1);
});

Deno.test("validation errors are surfaced with the kernel's name", async () => {
  await assert.rejects(
    checked("broken_kernel", () => {
      const p = kernel(
        "broken_kernel",
        "broken_kernel",
        () => "@compute @workgroup_size(1) fn main() { let x: f32 = undefined_thing; }",
      );
      dispatch(p, [], [1]);
    }),
    /WebGPU error in broken_kernel/,
  );
});

Deno.test("WGSL literals", () => {
  assert.equal(f32(2), "2.0");
  assert.equal(f32(1e-5), "1e-5");
  assert.throws(() => f32(Infinity));
});

Deno.test("the planner's state is one context: initGPU keeps it, a reset replaces it whole", async () => {
  const ctx = plannerContext();
  await initGPU();
  assert.equal(plannerContext(), ctx, "a later initGPU keeps the context");
  const saved = resetPlannerContext();
  try {
    setPlanOverride("conv=tiled");
    setAutotune(true);
    assert.equal(plannerContext().overrides.length, 1);
    resetPlannerContext();
    assert.equal(planOverride(), "");
    assert.equal(autotuneEnabled(), false);
    assert.deepEqual([...plannerContext().winners], []);
  } finally {
    resetPlannerContext(saved);
  }
  assert.equal(plannerContext(), saved);
});
