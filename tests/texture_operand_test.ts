// The GEMM operand textures: power-of-two heights (llvmpipe compiles a shader variant per texture
// state), reuse of the smallest texture that fits, and the size limit. Values read through them are
// checked by tests/registry_test.ts (gemm1x1/vec4-texture, matmul/texture).

import assert from "node:assert/strict";
import { fitsOperandTexture, operandTexture, trimOperandTextures } from "../kernels/texture_operand.ts";
import { gpu } from "../kernels/runtime.ts";
import { setup } from "./helpers.ts";

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
