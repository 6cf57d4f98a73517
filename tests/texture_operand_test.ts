// The GEMM operand textures: power-of-two heights (llvmpipe compiles a shader variant per texture
// state), reuse of the smallest texture that fits, and the size limit. Values read through them are
// checked by the registry sweep (gemm1x1/vec4-texture, matmul/texture; its software profile reads
// them as storage textures, its gpu profile as sampled ones); below, both read modes give equal values.

import assert from "node:assert/strict";
import {
  fitsOperandTexture,
  operandTexture,
  storageTextureReads,
  textureReadTag,
  trimOperandTextures,
} from "../kernels/texture_operand.ts";
import {
  acquireBuffer,
  gpu,
  readback,
  releaseBuffer,
  startCapture,
  stopCapture,
  upload,
} from "../kernels/runtime.ts";
import { adapterProfile, setProfile } from "../kernels/profile.ts";
import { conv1x1Forward } from "../kernels/conv1x1.ts";
import { depthwiseForward } from "../kernels/depthwise.ts";
import { conv2dRef, convShape } from "../kernels/reference/conv.ts";
import { Rng } from "../autograd/random.ts";
import { assertClose, randomArray, setup } from "./helpers.ts";

Deno.test("operand textures: power-of-two heights, the smallest that fits is reused, the limit is checked", async () => {
  await setup();
  trimOperandTextures();
  try {
    const a = operandTexture("test", 3 * 2048 + 1); // 4 rows
    assert.deepEqual([a.width, a.height], [2048, 4]);
    const b = operandTexture("test", 5 * 2048); // 5 rows → 8
    assert.equal(b.height, 8);
    assert.equal(operandTexture("test", 2048), a, "the smallest texture that fits serves");
    assert.equal(operandTexture("test", 4 * 2048 + 1), b);
    assert.notEqual(operandTexture("other", 10), a, "roles do not share textures");
    const max = gpu().limits.maxTextureDimension2D;
    assert.ok(fitsOperandTexture(max * 2048 * 4));
    assert.ok(!fitsOperandTexture(max * 2048 * 4 + 4));
    assert.throws(() => operandTexture("test", max * 2048 + 1), /exceeds the texture limit/);
  } finally {
    trimOperandTextures();
  }
});

Deno.test("operand textures read as read-only storage textures or as sampled ones: the same values", async () => {
  await setup();
  if (!storageTextureReads()) {
    // only where the software profile asks for storage reads and WGSL has them (lavapipe, Deno)
    setProfile("software");
    const ok = storageTextureReads();
    setProfile(null);
    if (!ok) return console.log("skipped: no read-only storage textures in this WGSL");
  }
  const rng = new Rng(7);
  const s = convShape([2, 8, 4, 4], 12, 1), d = convShape([2, 8, 6, 6], 8, 7, 1, 3, 8);
  const x = randomArray(rng, 2 * 8 * 16), w = randomArray(rng, 12 * 8), b = randomArray(rng, 12);
  const xd = randomArray(rng, 2 * 8 * 36), wd = randomArray(rng, 8 * 49);
  const buf = (a: Float64Array) => {
    const g = acquireBuffer(a.length * 4);
    upload(g, Float32Array.from(a));
    return g;
  };
  const [xb, wb, bb, xdb, wdb] = [x, w, b, xd, wd].map(buf);
  const y = acquireBuffer(2 * 12 * 16 * 4), yd = acquireBuffer(2 * 8 * 36 * 4);
  const read = async (g: GPUBuffer, n: number) => new Float32Array(await readback(g, 0, n * 4));
  try {
    const results: Float32Array[][] = [];
    const pipes: GPUComputePipeline[][] = [];
    for (const storage of [true, false]) {
      setProfile("software");
      setProfile({ ...adapterProfile(), storageTextureReads: storage });
      assert.equal(textureReadTag(), storage ? "st" : "tx");
      startCapture();
      conv1x1Forward(xb, wb, bb, y, s, "gemm1x1/vec4-texture");
      depthwiseForward(xdb, wdb, null, yd, d);
      pipes.push(stopCapture().map((c) => c.pipe));
      results.push([await read(y, 2 * 12 * 16), await read(yd, 2 * 8 * 36)]);
    }
    // both kernels read textures, so the read mode gives each a pipeline of its own
    assert.equal(pipes[0].length, 2);
    assert.ok(pipes[0].every((p, i) => p !== pipes[1][i]), "each kernel built for its read mode");
    assertClose(results[0][0], conv2dRef(x, w, b, s), { rtol: 1e-5, atol: 1e-5 }, "1×1 GEMM");
    assertClose(results[0][1], conv2dRef(xd, wd, null, d), { rtol: 1e-5, atol: 1e-5 }, "depthwise");
    assert.deepEqual(results[1], results[0], "sampled reads = storage reads");
  } finally {
    setProfile(null);
    [xb, wb, bb, xdb, wdb, y, yd].forEach(releaseBuffer);
  }
});
