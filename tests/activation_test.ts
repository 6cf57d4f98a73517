import { gelu, softmax } from "../autograd/ops/activation.ts";
import { noGrad, tensor } from "../mod.ts";
import { assertClose, checkOp, randomArray, setup } from "./helpers.ts";
import assert from "node:assert/strict";

await setup();

/** erfc in f64 to ~1e-15 relative: a positive series for |x| < 3, a continued fraction beyond. */
export function erfc64(x: number): number {
  if (x < -3) return 2 - erfc64(-x);
  if (x < 3) {
    let term = x, sum = x;
    for (let n = 1; n < 200 && Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
      term *= (2 * x * x) / (2 * n + 1);
      sum += term;
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
  }
  let f = x;
  for (let k = 80; k >= 1; k--) f = x + k / 2 / f;
  return Math.exp(-x * x) / (Math.sqrt(Math.PI) * f);
}

export const gelu64 = (x: number) => 0.5 * x * erfc64(-x / Math.SQRT2);
const geluGrad64 = (x: number) =>
  0.5 * erfc64(-x / Math.SQRT2) + x * Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);

/** Softmax in f64 along the middle axis of [outer, d, inner]. */
function cpuSoftmax(x: Float64Array, shape: number[], dim: number): Float64Array {
  const outer = shape.slice(0, dim).reduce((a, b) => a * b, 1), d = shape[dim];
  const inner = shape.slice(dim + 1).reduce((a, b) => a * b, 1);
  const y = new Float64Array(x.length);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (k: number) => o * d * inner + k * inner + i;
      let m = -Infinity;
      for (let k = 0; k < d; k++) m = Math.max(m, x[at(k)]);
      let s = 0;
      for (let k = 0; k < d; k++) s += Math.exp(x[at(k)] - m);
      for (let k = 0; k < d; k++) y[at(k)] = Math.exp(x[at(k)] - m) / s;
    }
  }
  return y;
}

Deno.test("the f64 erfc reference", () => {
  // erfc(0.5), erfc(2), erfc(5) from tables
  assertClose([erfc64(0.5), erfc64(2), erfc64(5), erfc64(-1)], [
    0.4795001221869535,
    0.004677734981047266,
    1.5374597944280349e-12,
    1.8427007929497148,
  ], { rtol: 1e-13, atol: 0 });
});

for (const [shape, s] of [[[3, 5, 9, 9], 1], [[2, 7], 4]] as [number[], number][]) {
  Deno.test(`gelu on ${shape} (inputs in ±${s})`, async () => {
    await checkOp({
      name: "gelu",
      shapes: [shape],
      init: (rng, sh) => randomArray(rng, sh.reduce((a, b) => a * b, 1), s),
      gpu: ([x]) => gelu(x),
      cpu: ([x]) => x.map(gelu64),
    });
  });
}

Deno.test("gelu at 0 and at large |x|", async () => {
  const xs = [0, -0.5, 0.5, -3, 3, -5, 5, -8, 8, -10, 10, -20, 20, -1e4, 1e4, -3e38, 3e38];
  const x = tensor(xs, [xs.length], { requiresGrad: true });
  const y = gelu(x);
  y.backward(tensor(new Float32Array(xs.length).fill(1), [xs.length]));
  const yv = await y.toArray(), gv = await x.grad!.toArray();
  assert.ok([...yv, ...gv].every(Number.isFinite), `gelu gave a non-finite value: ${yv} / ${gv}`);
  assert.equal(yv[0], 0);
  assert.equal(gv[0], 0.5);
  // relative accuracy holds far into the negative tail (no 1 + erf cancellation); f32 rounding of
  // z² and exp() costs ~1e-7·z² there
  assertClose(yv, xs.map((v) => Math.fround(gelu64(v))), { rtol: 2e-5, atol: 1e-37 }, "gelu");
  assertClose(gv, xs.map((v) => Math.fround(geluGrad64(v))), { rtol: 2e-5, atol: 1e-37 }, "gelu'");
  [x, y].forEach((t) => t.dispose());
});

const softmaxCases: [number[], number][] = [[[3, 7], -1], [[3, 7], 0], [[3, 10], 1], [[2, 5, 3], 1], [
  [3, 5, 9, 9],
  1,
]];
for (const [shape, dim] of softmaxCases) {
  Deno.test(`softmax over dim ${dim} of ${shape}`, async () => {
    const d = dim < 0 ? dim + shape.length : dim;
    await checkOp({
      name: "softmax",
      shapes: [shape],
      init: (rng, sh) => randomArray(rng, sh.reduce((a, b) => a * b, 1), 3),
      gpu: ([x]) => softmax(x, dim),
      cpu: ([x]) => cpuSoftmax(x, shape, d),
    });
  });
}

Deno.test("softmax rows sum to 1, also with logits around ±1e4", async () => {
  const x = tensor(Float32Array.from([1e4, 1e4 - 1, -1e4, 0, 3e4, 3e4, 3e4, -3e4, 5, 6, 7, 8]), [3, 4]);
  const y = noGrad(() => softmax(x, 1));
  const v = await y.toArray();
  assert.ok(v.every(Number.isFinite));
  for (let r = 0; r < 3; r++) {
    assertClose([v[r * 4] + v[r * 4 + 1] + v[r * 4 + 2] + v[r * 4 + 3]], [1], { rtol: 1e-6 });
  }
  assertClose(v, cpuSoftmax(Float64Array.from(await x.toArray()), [3, 4], 1), { rtol: 1e-5, atol: 1e-7 });
  assert.throws(() => softmax(x, 2), /softmax: dim 2 out of range for \[3, 4\]/);
  [x, y].forEach((t) => t.dispose());
});
