import { mean, noGrad, Rng, sum, sumTo, tensor } from "../mod.ts";
import { empty } from "../autograd/tensor.ts";
import { reduceGroups, sumAxes, sumChunks } from "../kernels/reduce.ts";
import { pipelineKeys } from "../kernels/runtime.ts";
import { readMany } from "../nn/module.ts";
import { assertClose, checkOp, randomArray, setup } from "./helpers.ts";
import { sumRef } from "../kernels/reference/reduce.ts";
import assert from "node:assert/strict";

await setup();

const cases: [number[], number[]][] = [
  [[3, 5, 9, 9], [0, 2, 3]], // per-channel (bias gradient)
  [[3, 5, 9, 9], [1]],
  [[3, 7], [1]],
  [[3, 7], [0, 1]],
  [[2, 600], [1]], // long rows: workgroup reduction
  [[1, 3, 9, 9], [2, 3]],
  // a short sum keeping a last axis that is a multiple of 4: four outputs per invocation, as vec4
  [[6, 12], [0]],
  [[3, 5, 8], [0, 1]],
  [[2, 3, 4], [1]],
];

for (const [shape, axes] of cases) {
  Deno.test(`sum and mean over ${axes} of ${shape}`, async () => {
    const count = axes.reduce((a, i) => a * shape[i], 1);
    await checkOp({
      name: "sum",
      shapes: [shape],
      gpu: ([x]) => sum(x, { dim: axes }),
      cpu: ([x]) => sumRef(x, shape, axes),
    });
    await checkOp({
      name: "mean",
      shapes: [shape],
      gpu: ([x]) => mean(x, { dim: axes, keepDim: true }),
      cpu: ([x]) => sumRef(x, shape, axes, 1 / count),
    });
  });
}

Deno.test("sum of everything and sumTo a broadcast shape", async () => {
  await checkOp({
    name: "sum_all",
    shapes: [[3, 5, 9]],
    gpu: ([x]) => sum(x),
    cpu: ([x]) => Float64Array.of(x.reduce((a, b) => a + b)),
  });
  await checkOp({
    name: "sumTo",
    shapes: [[3, 5, 4, 4]],
    gpu: ([x]) => sumTo(x, [5, 1, 1]),
    cpu: ([x]) => sumRef(x, [3, 5, 4, 4], [0, 2, 3]),
  });
});

/** Runs `fn` and returns the keys of the pipelines it created. */
async function createdBy(fn: () => Promise<void>): Promise<string[]> {
  const before = new Set(pipelineKeys());
  await fn();
  return pipelineKeys().filter((k) => !before.has(k));
}

// [shape at batch n, axes]: the loop (a bias gradient over the batch), the vec4 loop (split partials
// [chunks, outputs]), the tree over n·h·w, the vec4 tree over a long last axis
const batchCases = (n: number): [number[], number[]][] => [
  [[n, 10], [0]],
  [[n, 12], [0]],
  [[n, 3, 300], [0, 2]],
  [[n, 3, 256], [2]],
];

Deno.test("sum and mean at two batch sizes: one pipeline serves both", async () => {
  const run = async (n: number) => {
    for (const [shape, axes] of batchCases(n)) {
      const count = axes.reduce((a, i) => a * shape[i], 1);
      const x64 = randomArray(new Rng(n), shape.reduce((a, b) => a * b, 1));
      const x = tensor(Float32Array.from(x64), shape);
      const [s, m] = noGrad(() => [sum(x, { dim: axes }), mean(x, { dim: axes })]);
      assertClose(await s.toArray(), sumRef(x64, shape, axes), {}, `sum over ${axes} of [${shape}]`);
      assertClose(
        await m.toArray(),
        sumRef(x64, shape, axes, 1 / count),
        {},
        `mean over ${axes} of [${shape}]`,
      );
      [x, s, m].forEach((t) => t.dispose());
    }
  };
  await run(2);
  assert.deepEqual(await createdBy(() => run(5)), []);
});

/**
 * reduceGroups over [n, c, l]: per (n, c) the sum and the sum of squares, per channel the mean over n·l
 * (the scale follows the batch). The variant is chosen as at batch 64: l = 2 runs the loop, l = 300 the
 * vec4 trees, l = 301 the scalar trees.
 */
async function groupsAt(n: number, c: number, l: number): Promise<void> {
  const shape = [n, c, l];
  const x64 = randomArray(new Rng(n + l), n * c * l);
  const x = tensor(Float32Array.from(x64), shape);
  const stats = empty([2 * 64]), perChannel = empty([c]);
  reduceGroups("test_groups", {
    shape,
    inputs: [{ binding: x.binding(), shape }],
    outs: [stats.binding(), perChannel.binding()],
    groups: [
      { axes: [2], exprs: ["v0", "v0 * v0"], dst: [{ slot: 0, offset: 0 }, { slot: 0, offset: 64 }] },
      { axes: [0, 2], exprs: ["v0"], dst: [{ slot: 1, offset: 0 }], scale: 1 / (n * l) },
    ],
  });
  const [st, pc] = await readMany([stats, perChannel]);
  assertClose(st.slice(0, n * c), sumRef(x64, shape, [2]), {}, "row sums");
  assertClose(st.slice(64, 64 + n * c), sumRef(x64.map((v) => v * v), shape, [2]), {}, "row sums of squares");
  assertClose(pc, sumRef(x64, shape, [0, 2], 1 / (n * l)), {}, "channel means");
  [x, stats, perChannel].forEach((t) => t.dispose());
}

Deno.test("reduceGroups at two batch sizes: one pipeline serves both", async () => {
  const run = async (n: number) => {
    for (const l of [2, 300, 301]) await groupsAt(n, 3, l);
  };
  await run(2);
  assert.deepEqual(await createdBy(() => run(5)), []);
});

/**
 * sumChunks over blocks of partials [chunks, n] (n = 12: vec4; n = 7: scalar) against sumAxes over the
 * chunks, bit for bit (the same sums in the same order), writing into slices of one buffer.
 */
async function chunksAt(chunks: number): Promise<void> {
  const rng = new Rng(chunks);
  const sizes = [12, 7, 8];
  const srcs = sizes.map((n) => tensor(Float32Array.from(randomArray(rng, chunks * n)), [chunks, n]));
  // the outputs: slices at 256-byte offsets of one buffer (as gradients in an optimizer's arena)
  const arena = empty([3 * 64]), alone = sizes.map((n) => empty([n]));
  const base = arena.binding() as { buffer: GPUBuffer; offset?: number };
  const slice = (k: number) => ({
    buffer: base.buffer,
    offset: (base.offset ?? 0) + k * 256,
    size: sizes[k] * 4,
  });
  sumChunks(chunks, sizes.map((n, k) => ({ src: srcs[k].binding(), n, dst: slice(k) })));
  sizes.forEach((n, k) => sumAxes(srcs[k].binding(), [chunks, n], [0], alone[k].binding()));
  const [a, ...ref] = await readMany([arena, ...alone]);
  sizes.forEach((n, k) =>
    assert.deepEqual(a.slice(64 * k, 64 * k + n), ref[k], `block ${k} at ${chunks} chunks`)
  );
  [...srcs, arena, ...alone].forEach((t) => t.dispose());
}

Deno.test("sumChunks: the same bits as sumAxes over the chunks, one pipeline for every chunk count", async () => {
  await chunksAt(3);
  assert.deepEqual(await createdBy(() => chunksAt(17)), []);
});
