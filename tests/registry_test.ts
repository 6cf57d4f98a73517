// The runner of the op registry (tests/registry.ts). For every registered op and shape: the planner
// lists the expected variants for each pass; every variant of every pass, forced through the planner's
// override, gives the CPU reference's values and gradients under both adapter profiles (their tunings
// generate different kernels), and its kernels are the ones that ran (dispatch labels name the
// variant); fusions on and off agree; every buffer goes back to the pool.
// Then every PyTorch fixture case through the op that claims it: its CPU reference and its GPU op.

import assert from "node:assert/strict";
import { poolStats, Rng, scope, tensor } from "../mod.ts";
import { FUSIONS, KNOWN_VARIANTS, withPlanOverride } from "../kernels/planner.ts";
import { setProfile } from "../kernels/profile.ts";
import { type CapturedDispatch, startCapture, stopCapture } from "../kernels/runtime.ts";
import { assertClose, finiteDiff, randomArray, setup, type Tol } from "./helpers.ts";
import { type FixtureCase, type FixtureFile, type OpCase, REGISTRY } from "./registry.ts";

await setup();

const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);

// ---------------------------------------------------------------- which kernels a variant runs

const TILED = /^gemm\/tiled(-splitk)?$/;
/** The dispatch labels of each variant's kernels (the kernels name their pipelines by variant). */
const RAN: Record<string, RegExp[]> = {
  "patches": [/^patches\/gather$/],
  "gemm1x1/texture": [/^matmul\/texture$/],
  "gemm1x1/columns-texture": [/^gemm1x1\/columns$/, /^matmul\/texture$/],
  "gemm1x1/tiled": [TILED],
  "gemm1x1/columns-tiled": [/^gemm1x1\/columns$/, TILED],
  "gemm1x1/vec4": [/^gemm1x1\/vec4$/],
  "gemm1x1/vec4-texture": [/^gemm1x1\/vec4-texture$/],
  "gemm1x1/vec4-texture-half": [/^gemm1x1\/vec4-texture-half$/],
  "gemm1x1/scalar": [/^gemm1x1\/scalar$/],
  "depthwise/direct": [/^depthwise\/direct$/],
  "depthwise/tiled": [/^depthwise\/tiled$/],
  "direct/blocked": [/^direct\/blocked$/],
  "matmul/texture": [/^matmul\/texture$/],
  "matmul/tiled": [TILED],
  "matmul/generic": [/^matmul\/generic$/],
};
/** Labels of the planned kernel families. */
const FAMILY = /^(patches|gemm1x1|gemm|matmul|depthwise|direct)\//;

/** Asserts that `variant`'s kernels ran and no other planned kernel did. */
function assertRan(variant: string, labels: string[], what: string): void {
  const want = RAN[variant];
  assert.ok(want, `${what}: no kernel labels known for variant ${variant}`);
  for (const re of want) {
    assert.ok(labels.some((l) => re.test(l)), `${what}: no ${re} kernel ran (kernels: ${labels.join(", ")})`);
  }
  // the gather of a patch conv feeds a 1×1 conv, which runs a variant of its own plan
  if (variant === "patches") return;
  const stray = labels.filter((l) => FAMILY.test(l) && !want.some((re) => re.test(l)));
  assert.deepEqual(stray, [], `${what}: kernels of other variants ran (kernels: ${labels.join(", ")})`);
}

// ---------------------------------------------------------------- one run against the reference

interface Ref {
  xs: Float64Array[];
  y: Float64Array;
  up: Float64Array;
  grads: Float64Array[];
}

const f32 = (a: Float64Array) => Float64Array.from(Float32Array.from(a));

/** Inputs (rounded to f32, so the reference sees what the GPU sees), output and input gradients. */
function reference(c: OpCase): Ref {
  const rng = new Rng(1234);
  const init = c.init ?? ((r: Rng, s: number[]) => randomArray(r, prod(s)));
  const xs = c.shapes.map((s, i) => f32(init(rng, s, i)));
  const y = c.cpu(xs);
  const up = f32(randomArray(rng, y.length));
  return { xs, y, up, grads: c.cpuBackward ? c.cpuBackward(xs, up) : finiteDiff(c.cpu, xs, up) };
}

interface Outcome {
  forward: string[];
  backward: string[];
  /** The pipelines of every dispatch, forward then backward. */
  pipes: GPUComputePipeline[];
  values: Float32Array[];
}

/**
 * Runs the op under override `spec` with gradients for inputs `grads`, checks the output and those
 * gradients against the reference and that no buffer stays in use; returns the labels of the forward's
 * and of the backward's dispatches, and the values it produced (output, constant inputs afterwards,
 * gradients).
 */
async function run(c: OpCase, ref: Ref, spec: string, grads: number[], what: string): Promise<Outcome> {
  const before = poolStats().bytesInUse;
  const leaves = c.shapes.map((s, i) =>
    tensor(Float32Array.from(ref.xs[i]), s, { requiresGrad: grads.includes(i) })
  );
  let forward: CapturedDispatch[] = [], backward: CapturedDispatch[] = [];
  const y = withPlanOverride(spec, () =>
    scope(() => {
      startCapture();
      const out = c.gpu(leaves);
      forward = stopCapture();
      const up = tensor(Float32Array.from(ref.up), out.shape);
      startCapture();
      out.backward(up);
      backward = stopCapture();
      up.dispose();
      return out;
    }));
  // the output, then the constant inputs after the op (running statistics it updates in place)
  const values = [await y.toArray()];
  for (const i of c.noGrad) values.push(await leaves[i].toArray());
  assertClose(values[0], ref.y, c.tol, `${what}: forward`);
  for (const i of grads) {
    const g = leaves[i].grad;
    assert.ok(g, `${what}: input ${i} got no gradient`);
    values.push(await g.toArray());
    assertClose(
      values[values.length - 1],
      ref.grads[i],
      c.gradTol ?? { rtol: 1e-3, atol: 1e-4 },
      `${what}: grad ${i}`,
    );
  }
  y.dispose();
  leaves.forEach((t) => t.dispose());
  const after = poolStats().bytesInUse;
  assert.equal(after, before, `${what}: ${after - before} bytes still in use after the op`);
  const label = (d: CapturedDispatch) => d.label;
  const pipes = [...forward, ...backward].map((d) => d.pipe);
  return { forward: forward.map(label), backward: backward.map(label), pipes, values };
}

// ---------------------------------------------------------------- the sweep

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
  assert.deepEqual(KNOWN_VARIANTS.filter((v) => !seen.has(v)), [], "variants no registered shape lists");
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

const EXACT: Tol = { rtol: 1e-5, atol: 1e-6 };

/** The adapter profiles: their tunings (register blocks, texture GEMM blocks) shape the generated kernels. */
const PROFILES = ["software", "gpu"] as const;

/** Every variant of every pass of `c`, forced, against the reference; and that it ran. */
async function sweep(c: OpCase, ref: Ref, name: string): Promise<void> {
  for (const p of c.passes) {
    for (const l of p.listed()) {
      assert.deepEqual(l, p.expected, `${name}: the planner's variants for ${p.pass}`);
    }
  }
  for (const p of c.passes) {
    for (const v of p.expected) {
      const what = `${name} ${p.pass}=${v}`;
      const spec = [p.base?.(v), `${p.target}=${v}`].filter(Boolean).join(",");
      const o = await run(c, ref, spec, p.grads, what);
      assertRan(v, p.pass === "forward" ? o.forward : o.backward, what);
    }
  }
}

/** Each fusion of `c` on and off (under its plan): both equal the reference and each other. */
async function fusions(c: OpCase, ref: Ref, all: number[], name: string): Promise<void> {
  for (const f of c.fusions) {
    const what = `${name} ${f.name}`;
    // forced on: a profile may turn a fusion off by default
    const on = await run(c, ref, [f.plan, `fuse.${f.name}=on`].filter(Boolean).join(","), all, `${what} on`);
    const offSpec = [f.plan, `fuse.${f.name}=off`].filter(Boolean).join(",");
    const off = await run(c, ref, offSpec, all, `${what} off`);
    on.values.forEach((v, i) => assertClose(v, off.values[i], EXACT, `${what}: on vs off (${i})`));
    const same = on.pipes.length === off.pipes.length && on.pipes.every((p, i) => p === off.pipes[i]);
    assert.ok(!same, `${what}: the fusion switch changes no kernel`);
  }
}

for (const e of REGISTRY) {
  for (const c of e.cases) {
    const name = `${e.name} ${c.name}`;
    let cached: Ref | null = null;
    const ref = () => cached ??= reference(c);
    const all = c.shapes.map((_, i) => i).filter((i) => !c.noGrad.includes(i));
    for (const profile of c.passes.length ? PROFILES : []) {
      Deno.test(`${name}: every variant of every pass = CPU reference (${profile} profile)`, async () => {
        setProfile(profile);
        try {
          await sweep(c, ref(), `${name} (${profile})`);
        } finally {
          setProfile(null);
        }
      });
    }
    if (c.fusions.length) {
      Deno.test(`${name}: ${c.fusions.map((f) => f.name).join(", ")} on = off = CPU reference`, async () => {
        await fusions(c, ref(), all, name);
      });
    } else if (!c.passes.length) {
      Deno.test(`${name}: forward and gradients = CPU reference`, async () => {
        await run(c, ref(), "", all, name);
      });
    }
  }
}

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
