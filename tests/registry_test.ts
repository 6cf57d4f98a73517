// The op registry (tests/registry.ts): it covers every planner variant, the required ops and every
// fusion; the sweep (tests/registry_sweep.ts) of every op outside the convolution family
// (tests/registry_conv_test.ts sweeps those); then every PyTorch fixture case through the op that claims
// it: its CPU reference and its GPU op.

import assert from "node:assert/strict";
import { Rng, scope, tensor } from "../mod.ts";
import { FUSIONS, knownVariants } from "../kernels/planner.ts";
import { assertClose, finiteDiff, randomArray, setup, type Tol } from "./helpers.ts";
import { type FixtureCase, type FixtureFile, REGISTRY } from "./registry.ts";
import { CONV_OPS, registerSweeps } from "./registry_sweep.ts";

await setup();

Deno.test("every analytic backward reference equals central differences of its forward reference", () => {
  // the sweep checks the GPU gradients against cpuBackward where a case has one: this keeps those
  // references honest (one smallest shape per op, in f64)
  const rng = new Rng(99);
  const checked: string[] = [];
  for (const e of REGISTRY) {
    const c = e.cases.filter((c) => c.cpuBackward).sort((a, b) => size(a.shapes) - size(b.shapes))[0];
    if (!c) continue;
    const init = c.init ?? ((r: Rng, s: number[]) => randomArray(r, s.reduce((a, b) => a * b, 1)));
    const xs = c.shapes.map((s, i) => init(rng, s, i));
    const up = randomArray(rng, c.cpu(xs).length);
    const analytic = c.cpuBackward!(xs, up), numeric = finiteDiff(c.cpu, xs, up);
    analytic.forEach((g, i) => {
      if (g) assertClose(g, numeric[i], { rtol: 1e-5, atol: 1e-6 }, `${c.name}: input ${i}`);
    });
    checked.push(e.name);
  }
  console.log(`backward references checked: ${checked.join(", ")}`);
  assert.ok(checked.length >= 10, `only ${checked.length} ops have a backward reference`);
});

Deno.test("the registry covers every planner variant, the required ops and every fusion", () => {
  const rows: string[] = [];
  const seen = new Set<string>();
  for (const e of REGISTRY) {
    const byPass = new Map<string, Set<string>>();
    for (const c of e.cases) {
      for (const p of c.passes) {
        const set = byPass.get(p.pass) ?? new Set<string>();
        p.expected.forEach((v) => (set.add(v), seen.add(v)));
        byPass.set(p.pass, set);
      }
    }
    const passes = [...byPass].map(([pass, vs]) => `${pass}: ${[...vs].join(", ")}`);
    rows.push(`${e.name.padEnd(22)} ${e.cases.length} shapes  ${passes.join("; ") || "(no planned pass)"}`);
  }
  console.log(rows.join("\n"));
  assert.deepEqual(knownVariants().filter((v) => !seen.has(v)), [], "variants no registered shape lists");
  const names = REGISTRY.map((e) => e.name);
  for (
    const op of [
      "conv2d",
      "matmul",
      "linear",
      "gelu",
      "relu",
      "softmax",
      "crossEntropy",
      "groupNorm",
      "layerNorm",
      "batchNorm2d",
      "adaptiveAvgPool2d",
    ]
  ) assert.ok(names.includes(op), `${op} is registered`);
  const fused = new Set(REGISTRY.flatMap((e) => e.cases.flatMap((c) => c.fusions.map((f) => f.name))));
  assert.deepEqual(FUSIONS.filter((f) => !fused.has(f)), [], "fusions that no registered op checks");
});

registerSweeps((op) => !CONV_OPS.has(op));

// ---------------------------------------------------------------- PyTorch fixtures

const FIXTURE_FILES: FixtureFile[] = ["ops.json", "conv.json"];
const fixtures = new Map<FixtureFile, unknown[]>();
for (const f of FIXTURE_FILES) {
  const text = await Deno.readTextFile(new URL(`./fixtures/${f}`, import.meta.url));
  fixtures.set(f, (JSON.parse(text) as { cases: unknown[] }).cases);
}

const claims = (e: (typeof REGISTRY)[number], file: FixtureFile, raw: unknown) =>
  e.fixtures?.file === file &&
  (file === "conv.json" || e.fixtures.ops.includes((raw as { op: string }).op));

Deno.test("every PyTorch fixture case is replayed by exactly one registered op", () => {
  for (const [file, cases] of fixtures) {
    for (const raw of cases) {
      const by = REGISTRY.filter((e) => claims(e, file, raw)).map((e) => e.name);
      assert.equal(by.length, 1, `${file} ${(raw as { name: string }).name}: claimed by [${by}]`);
    }
  }
});

const GOLDEN_TOL: Tol = { rtol: 1e-4, atol: 1e-5 };

/**
 * The CPU reference on the fixture's inputs gives PyTorch's output and gradients, to the fixture's
 * precision (conv.json holds float32 results, ops.json float64 ones), ten times tighter than the GPU's.
 */
function referenceMatches(f: FixtureCase): void {
  const xs = f.inputs.map((a) => Float64Array.from(a.data)), up = Float64Array.from(f.upstream.data);
  const tol = { rtol: 1e-5, atol: 1e-6 };
  assertClose(f.cpu(xs), f.output.data, tol, `${f.name}: CPU reference output`);
  // finite differences carry an error of their own (~1e-16·|loss|/h)
  const grads = f.cpuBackward ? f.cpuBackward(xs, up) : finiteDiff(f.cpu, xs, up);
  f.grads.forEach((g, i) => g && assertClose(grads[i], g, tol, `${f.name}: CPU reference grad ${i}`));
}

async function replay(f: FixtureCase): Promise<void> {
  referenceMatches(f);
  const xs = f.inputs.map((a, i) => tensor(a.data, a.shape, { requiresGrad: f.grads[i] !== null }));
  const y = scope(() => {
    const out = f.gpu(xs);
    assert.deepEqual(out.shape, f.output.shape, `${f.name}: output shape`);
    const up = tensor(f.upstream.data, f.upstream.shape);
    out.backward(up);
    up.dispose();
    return out;
  });
  assertClose(await y.toArray(), f.output.data, GOLDEN_TOL, `${f.name}: output`);
  for (const [i, g] of f.grads.entries()) {
    if (!g) continue;
    assert.ok(xs[i].grad, `${f.name}: input ${i} got no gradient`);
    assertClose(await xs[i].grad!.toArray(), g, GOLDEN_TOL, `${f.name}: grad ${i}`);
  }
  for (const [i, want] of f.after) {
    assertClose(await xs[i].toArray(), want, GOLDEN_TOL, `${f.name}: input ${i} after`);
  }
  [y, ...xs].forEach((t) => t.dispose());
}

for (const e of REGISTRY) {
  const fx = e.fixtures;
  if (!fx) continue;
  for (const raw of fixtures.get(fx.file)!.filter((r) => claims(e, fx.file, r))) {
    const f = fx.load(raw);
    Deno.test(`${e.name} = PyTorch (${fx.file}): ${f.name}`, () => replay(f));
  }
}

function size(shapes: number[][]): number {
  return shapes.reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0);
}
