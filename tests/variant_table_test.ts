// The variant tables: a variant added to a family's table (here, in the test) is seen by the planner, the
// override parser, autotune's candidates and a model's plan with no other change, runs through the
// dispatch functions, and is gone when removed. The planner is a pure function over the tables; its
// state is one context object that tests can replace.

import assert from "node:assert/strict";
import { GEMM1X1_VARIANTS } from "../kernels/conv1x1.ts";
import { convForward } from "../kernels/conv.ts";
import { matmul } from "../kernels/matmul.ts";
import {
  applicableConv,
  chooseConv,
  convVariants,
  defaultConvVariant,
  knownVariants,
  pendingTunes,
  planConv,
  planOverride,
  recordWinner,
  setAutotune,
  setPlanOverride,
  tuneCandidates,
  tunedAmong,
} from "../kernels/planner.ts";
import { profileFor } from "../kernels/profile.ts";
import {
  acquireBuffer,
  plannerContext,
  readback,
  releaseBuffer,
  resetPlannerContext,
  upload,
} from "../kernels/runtime.ts";
import type { ConvVariant } from "../kernels/variant.ts";
import { conv2dRef, convShape } from "../kernels/reference/conv.ts";
import { trainingStepPlan } from "../models/plan.ts";
import { main as info } from "../experiments/info.ts";
import { Rng } from "../autograd/random.ts";
import { assertClose, randomArray, setup } from "./helpers.ts";

const DUMMY = "gemm1x1/dummy";

/** A dummy 1×1 variant: the scalar GEMM's kernels under a new name, counting its runs. */
function dummyVariant(rank: number | null): ConvVariant & { runs: number } {
  const scalar = GEMM1X1_VARIANTS.find((v) => v.name === "gemm1x1/scalar")!;
  const v = {
    name: DUMMY,
    passes: scalar.passes,
    applies: scalar.applies,
    rank: () => rank,
    runs: 0,
    run: (b: Parameters<ConvVariant["run"]>[0], s: Parameters<ConvVariant["run"]>[1]) => {
      v.runs++;
      scalar.run(b, s);
    },
    tuneKey: scalar.tuneKey,
  };
  return v;
}

/** Runs `fn` with `v` in the 1×1 GEMM table and a fresh planner context, then removes both. */
async function withDummy<T>(v: ConvVariant, fn: () => T | Promise<T>): Promise<T> {
  GEMM1X1_VARIANTS.push(v);
  const saved = resetPlannerContext();
  try {
    return await fn();
  } finally {
    GEMM1X1_VARIANTS.splice(GEMM1X1_VARIANTS.indexOf(v), 1);
    resetPlannerContext(saved);
  }
}

const s = convShape([2, 8, 4, 4], 12, 1);

Deno.test("variant table: a variant added in a test is planned, overridden, tuned, run and listed", async () => {
  await setup();
  const dummy = dummyVariant(null);
  assert.ok(!knownVariants().includes(DUMMY));
  assert.throws(() => setPlanOverride(`conv.forward=dummy`), /unknown variant "dummy"/);
  await withDummy(dummy, async () => {
    // the planner and the override parser see it
    assert.ok(knownVariants().includes(DUMMY));
    for (const pass of ["forward", "inputGrad", "weightGrad"] as const) {
      assert.ok(convVariants(s, pass).includes(DUMMY), pass);
    }
    assert.notEqual(defaultConvVariant(s, "forward"), DUMMY, "a variant of rank null is never the default");
    setPlanOverride("conv.forward=dummy");
    assert.equal(planOverride(), "conv.forward=dummy");
    assert.deepEqual(planConv(s, "forward"), { variant: DUMMY, source: "override" });
    assert.notEqual(planConv(s, "inputGrad").variant, DUMMY, "the rule names the forward only");

    // the dispatch runs its `run`: the scalar kernels, equal to the CPU reference
    const rng = new Rng(5);
    const x = randomArray(rng, 2 * 8 * 16), w = randomArray(rng, 12 * 8);
    const buf = (a: Float64Array) => {
      const g = acquireBuffer(a.length * 4);
      upload(g, Float32Array.from(a));
      return g;
    };
    const [xb, wb] = [x, w].map(buf), y = acquireBuffer(2 * 12 * 16 * 4);
    try {
      convForward(xb, wb, null, y, s);
      assert.equal(dummy.runs, 1);
      const got = new Float32Array(await readback(y, 0, 2 * 12 * 16 * 4));
      assertClose(got, conv2dRef(x, w, null, s), {}, "dummy forward");
    } finally {
      [xb, wb, y].forEach(releaseBuffer);
    }

    // a model's plan (models/plan.ts, and info --plan, which lists it) names it for every 1×1 forward
    const narrow = { widths: [16, 32, 64, 128], depths: [1, 1, 1, 1], stemFeatures: 16 };
    const plan = trainingStepPlan("final", narrow, 4);
    const forwards = plan.filter((p) => p.op === "conv" && p.pass === "forward" && /,1,1,0,1$/.test(p.shape));
    assert.ok(forwards.length > 0 && forwards.every((p) => p.variant === DUMMY && p.source === "override"));
    const lines: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => lines.push(a.join(" "));
    try {
      const args = [
        "--stage",
        "final",
        "--plan",
        "--json",
        "--widths",
        "16,32,64,128",
        "--depths",
        "1,1,1,1",
      ];
      const rc = await info([
        ...args,
        "--stem-features",
        "16",
        "--no-autotune",
        "--force",
        "conv.forward=dummy",
      ]);
      assert.equal(rc, 0);
    } finally {
      console.log = log;
    }
    const listed = JSON.parse(lines.join("\n")).plan.map((p: { variant: string }) => p.variant);
    assert.ok(listed.includes(DUMMY), "info --plan lists it");

    // autotune: it is a candidate, queued shapes list it among those timed, and a winner is used
    setPlanOverride(null);
    setAutotune(true);
    const cands = tuneCandidates(convVariants(s, "forward"));
    assert.ok(cands.includes(DUMMY));
    assert.deepEqual(planConv(s, "forward").source, "default");
    const [[key]] = pendingTunes();
    recordWinner(key, DUMMY, cands);
    assert.deepEqual(planConv(s, "forward"), { variant: DUMMY, source: "autotune" });
  });
  // removed: unknown again, and nowhere in the plan
  assert.ok(!knownVariants().includes(DUMMY));
  assert.ok(!convVariants(s, "forward").includes(DUMMY));
  assert.throws(() => setPlanOverride("conv=dummy"), /unknown variant/);
});

Deno.test("variant table: a dummy ranked first becomes the default with no other change", async () => {
  await setup();
  const dummy = dummyVariant(-1);
  await withDummy(dummy, () => {
    assert.equal(defaultConvVariant(s, "forward"), DUMMY);
    const plan = trainingStepPlan("final", {
      widths: [16, 32, 64, 128],
      depths: [1, 1, 1, 1],
      stemFeatures: 16,
    }, 4);
    const pointwise = plan.filter((p) => p.op === "conv" && /,1,1,0,1$/.test(p.shape));
    assert.ok(pointwise.length > 0 && pointwise.every((p) => p.variant === DUMMY && p.source === "default"));
  });
  assert.notEqual(defaultConvVariant(s, "forward"), DUMMY);
});

Deno.test("planner: a pure function of shape, profile, overrides and winners; state in one context", async () => {
  await setup();
  const gpuProfile = profileFor("Some GPU"), soft = profileFor("llvmpipe");
  // the same inputs give the same plan, whatever the context holds
  const saved = resetPlannerContext();
  try {
    setPlanOverride("conv=scalar");
    assert.equal(chooseConv(s, "forward", soft, [], null).variant, "gemm1x1/vec4-texture");
    assert.equal(chooseConv(s, "forward", gpuProfile, [], null).variant, "gemm1x1/columns-tiled");
    assert.equal(
      chooseConv(s, "forward", soft, [{ target: "conv", variant: "tiled" }], null).variant,
      "gemm1x1/tiled",
    );
    const key = chooseConv(s, "forward", soft, [], null).key;
    const among = tunedAmong(applicableConv(s, "forward", soft).map((v) => v.name), soft);
    const winners = new Map([[key, { variant: "gemm1x1/vec4", among: among.join(",") }]]);
    assert.deepEqual(
      { ...chooseConv(s, "forward", soft, [], winners) },
      { variant: "gemm1x1/vec4", source: "autotune", key, untuned: false },
    );
    const untuned = chooseConv(s, "inputGrad", soft, [], new Map());
    assert.equal(untuned.untuned, true, "a shape without a winner is queued while autotune is on");
    assert.equal(plannerContext().overrides.length, 1);
  } finally {
    resetPlannerContext(saved);
  }
  assert.equal(planOverride(), saved.overrides.map((r) => `${r.target}=${r.variant}`).join(","));
});

Deno.test("matmul: the texture variant does not apply to unaligned dims and runs nothing else", async () => {
  await setup();
  const d = { batch: 1, m: 4, n: 6, k: 6, transA: false, transB: false, batchA: false, batchB: false };
  const [a, b, c] = [24, 36, 24].map((n) => acquireBuffer(n * 4));
  try {
    assert.throws(() => matmul(a, b, c, d, { variant: "matmul/texture" }), /cannot run/);
    assert.throws(() => matmul(a, b, c, d, { variant: "matmul/generic", rowBias: a }), /no row bias/);
  } finally {
    [a, b, c].forEach(releaseBuffer);
  }
});
