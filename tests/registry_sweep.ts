// The sweep of the op registry (tests/registry.ts), for the test files that run it (tests/registry_test.ts
// and tests/registry_conv_test.ts, split so that a parallel test run spreads it over two workers). For
// every registered op and shape: the planner lists the expected variants for each pass; every variant of
// every pass, forced through the planner's override, gives the CPU reference's values and gradients
// under both adapter profiles (their tunings generate different kernels), and its kernels are the ones
// that ran (dispatch labels name the variant); fusions on and off agree; every buffer goes back to the
// pool.

import assert from "node:assert/strict";
import { poolStats, Rng, scope, tensor } from "../mod.ts";
import { withPlanOverride } from "../kernels/planner.ts";
import { setProfile } from "../kernels/profile.ts";
import { type CapturedDispatch, startCapture, stopCapture } from "../kernels/runtime.ts";
import { assertClose, finiteDiff, randomArray, type Tol } from "./helpers.ts";
import { type OpCase, REGISTRY } from "./registry.ts";

/** The ops of the convolution family: tests/registry_conv_test.ts sweeps them, tests/registry_test.ts the rest. */
export const CONV_OPS: ReadonlySet<string> = new Set(["conv2d", "pointwiseMlp", "convGroupNorm"]);

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

/** Registers the sweep tests of the registered ops that `include` names. */
export function registerSweeps(include: (op: string) => boolean): void {
  for (const e of REGISTRY.filter((e) => include(e.name))) {
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
}
