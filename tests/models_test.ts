// The seven steps: parameter counts and FLOPs against SEED.md, state-dict names against the notebook's
// PyTorch models, PyTorch golden logits/loss/gradients (scripts/golden/models.py), and forward +
// backward of every step at narrow widths.

import assert from "node:assert/strict";
import { dryRun, poolStats } from "../kernels/runtime.ts";
import { meta, scope, type Tensor, tensor } from "../autograd/tensor.ts";
import { crossEntropy } from "../autograd/ops/loss.ts";
import { onMeta, readMany, traceModules } from "../nn/module.ts";
import { loadSafetensors } from "../experiments/files.ts";
import { buildModel, type Model, type ModelOptions, STAGES } from "../models/zoo.ts";
import { modelGolden, replayModelGolden } from "../checks/golden_cases.ts";
import { assertClose, setup } from "./helpers.ts";

await setup();

/** SEED.md: parameters and forward FLOPs per 32×32 image (in millions, one decimal). */
const SEED: Record<string, [number, number]> = {
  base: [1_485_258, 155.6],
  stage_ratio: [1_678_666, 173.4],
  patchify: [1_677_130, 170.3],
  resnextify: [878_362, 87.4],
  inverted: [11_837_194, 1321.6],
  kernel7: [11_256_970, 1213.6],
  final: [8_531_978, 886.5],
};
const CPU_VARIANT: ModelOptions = { widths: [16, 32, 64, 128], depths: [1, 1, 3, 1], stemFeatures: 16 };

Deno.test("parameter counts and FLOPs of the seven steps equal SEED.md (PyTorch's numbers)", () => {
  for (const stage of STAGES) {
    const m = onMeta(() => buildModel(stage));
    const [params, mflops] = SEED[stage];
    assert.equal(m.numParameters(), params, `${stage} parameters`);
    const f = m.flops() / 1e6;
    assert.ok(Math.abs(f - mflops) / mflops < 1e-3, `${stage}: ${f.toFixed(2)} MFLOPs vs ${mflops}`);
  }
  const cpu = onMeta(() => buildModel("final", CPU_VARIANT));
  assert.equal(cpu.numParameters(), 305_690);
  assert.ok(Math.abs(cpu.flops() / 1e6 - 32.2) / 32.2 < 1e-3, `CPU variant ${cpu.flops()}`);
  // exact values from scripts/golden/models.py --counts
  assert.equal(onMeta(() => buildModel("final")).flops(), 886_548_480);
  assert.equal(onMeta(() => buildModel("base")).flops(), 155_592_704);
  assert.equal(cpu.flops(), 32_225_792);
});

Deno.test("every step's own forward and backward run on meta tensors; summary lists each leaf call", () => {
  const before = poolStats();
  for (const stage of STAGES) {
    const model = onMeta(() => buildModel(stage, { dropPath: stage === "final" ? 0.1 : undefined }));
    const leaves = model.namedModules().filter(([, m]) => m.namedChildren().length === 0).map(([n]) => n);
    const called = new Set<string>();
    // training mode, as a training step (and the kernel plan of one) runs it
    dryRun(() =>
      traceModules(model, () => {
        const loss = crossEntropy(model.forward(meta([4, 3, 32, 32])), [0, 1, 2, 3]);
        assert.ok(loss.isMeta && loss.size === 1, `${stage}: loss`);
        loss.backward();
      }, { enter: (name) => called.add(name) })
    );
    assert.deepEqual(leaves.filter((n) => !called.has(n)), [], `${stage}: leaves the forward never called`);
    for (const [n, p] of model.namedParameters()) {
      assert.ok(p.grad?.isMeta && p.grad.shape.join() === p.shape.join(), `${stage}: gradient of ${n}`);
    }
    const rows = model.summary([2, 3, 32, 32]);
    assert.deepEqual(rows.map((r) => r.name), leaves, `${stage}: one summary row per leaf, in forward order`);
    assert.deepEqual(rows[rows.length - 1].outShape, [2, 10]);
    assert.equal(rows.reduce((a, r) => a + r.params, 0), model.numParameters());
  }
  assert.deepEqual(poolStats(), before, "meta models touch no GPU memory");
});

Deno.test("state-dict names, shapes and dtypes are the notebook's for every step", async () => {
  const spec: Record<string, string[]> = JSON.parse(
    await Deno.readTextFile(new URL("./fixtures/models_spec.json", import.meta.url)),
  );
  for (const stage of STAGES) {
    const m = onMeta(() => buildModel(stage, { depths: [2, 2, 2, 2] }));
    const ours = Object.entries(m.stateSpec()).map(([n, s]) =>
      `${n}:${s.shape.join("x")}:${s.dtype === "F32" ? "float32" : "int64"}`
    );
    assert.deepEqual(ours, spec[stage], stage);
  }
  const names = (stage: string) => Object.keys(onMeta(() => buildModel(stage)).stateSpec());
  assert.ok(names("final").includes("encoder.stem.0.weight"));
  assert.ok(names("final").includes("encoder.stages.2.3.layer_scaler.gamma"));
  assert.ok(names("final").includes("head.3.weight"));
  assert.ok(names("base").includes("encoder.stages.1.0.block.0.0.weight"));
  assert.ok(names("kernel7").includes("decoder.decoder.weight"));
});

Deno.test("unknown stage and bad overrides give clear errors", () => {
  assert.throws(() => buildModel("resnet"), /Unknown stage "resnet". Valid stages: base, stage_ratio/);
  assert.throws(() => onMeta(() => buildModel("final", { depths: [1, 1] })), /depths/);
  assert.throws(() => onMeta(() => buildModel("base", { widths: [6, 8, 12, 16] })), /multiples of 4/);
  assert.throws(() => onMeta(() => buildModel("kernel7", { widths: [8, 16, 16, 32] })), /differ/);
});

Deno.test("a model initialises like PyTorch: kaiming-uniform bounds, ones/zeros, γ = 1e-6; seeds reproduce", async () => {
  const opts = { widths: [8, 16, 16, 32], depths: [1, 1, 1, 1], stemFeatures: 8, seed: 5 };
  const a = buildModel("final", opts),
    b = buildModel("final", opts),
    c = buildModel("final", { ...opts, seed: 6 });
  const [sa, sb, sc] = [await a.stateDict(), await b.stateDict(), await c.stateDict()];
  const w = sa["encoder.stages.1.1.block.2.weight"]; // 1×1 conv 16 → 64: bound 1/√16
  assert.ok(w.every((v) => Math.abs(v) <= 0.25) && Math.max(...w.map(Math.abs)) > 0.2);
  const bias = sa["encoder.stages.1.1.block.2.bias"];
  assert.ok(bias.every((v) => Math.abs(v) <= 0.25));
  assert.ok(sa["encoder.stages.1.1.layer_scaler.gamma"].every((v) => v === Math.fround(1e-6)));
  assert.ok(
    sa["encoder.stem.1.weight"].every((v) => v === 1) &&
      sa["encoder.stem.1.running_var"].every((v) => v === 1),
  );
  assert.ok(sa["head.2.bias"].every((v) => v === 0));
  assert.deepEqual(sa["encoder.stem.1.num_batches_tracked"], Float32Array.of(0));
  assert.deepEqual(sa["head.3.weight"], sb["head.3.weight"]);
  assert.notDeepEqual(sa["head.3.weight"], sc["head.3.weight"]);
  [a, b, c].forEach((m) => m.dispose());
});

// ---------------------------------------------------------------- PyTorch golden values

async function goldenCase(stage: string): Promise<void> {
  const file = await loadSafetensors(
    new URL(`./fixtures/models_${stage}.safetensors`, import.meta.url).pathname,
  );
  const golden = modelGolden(file);
  const { meta, model, spec } = golden;
  assert.equal(meta.stage, stage);
  const worst: Record<string, number> = {};
  for (const mode of ["train", "eval"] as const) {
    const { names, output: out, loss: l, grads } = await replayModelGolden(golden, mode);
    const g = (k: string) => file.tensors[`${mode}/${k}`].data;
    const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    /** max |ours − PyTorch| / max |PyTorch| over a tensor (what the report quotes). */
    const normErr = (a: Float32Array, e: Float32Array) => maxAbs(a.map((v, i) => v - e[i])) / maxAbs(e);
    assertClose(out, g("output"), { rtol: 1e-3, atol: 1e-5 }, `${stage} ${mode} output`);
    assertClose(l, g("loss"), { rtol: 1e-4, atol: 1e-6 }, `${stage} ${mode} loss`);
    worst[`${mode} output`] = normErr(out, g("output"));
    worst[`${mode} loss`] = Math.abs(l[0] - g("loss")[0]) / g("loss")[0];
    const overall = Math.max(...names.map((n) => maxAbs(g(`grad/${n}`))));
    let wg = 0;
    names.forEach((n, i) => {
      const ref = g(`grad/${n}`);
      // compared relative to the tensor's scale (sums of many terms lose f32 bits), and to the largest
      // gradient of the model for tensors whose true gradient is ~0 (the stem bias before BatchNorm)
      const atol = Math.max(2e-3 * maxAbs(ref), 1e-5 * overall);
      assertClose(grads[i], ref, { rtol: 2e-3, atol }, `${stage} ${mode} grad ${n}`);
      if (maxAbs(ref) > 1e-4 * overall) wg = Math.max(wg, normErr(grads[i], ref));
    });
    worst[`${mode} grads`] = wg;
    if (mode === "train") {
      const state = await model.stateDict();
      let wb = 0;
      for (const [n, s] of Object.entries(spec)) {
        if (s.kind !== "buffer") continue;
        assertClose(state[n], g(`buffer/${n}`), { rtol: 1e-4, atol: 1e-6 }, `${stage} buffer ${n}`);
        if (!n.endsWith("num_batches_tracked")) wb = Math.max(wb, normErr(state[n], g(`buffer/${n}`)));
      }
      worst["train running stats"] = wb;
    }
  }
  console.log(
    `${stage} vs PyTorch, max |diff| / max |ref| per tensor (worst):`,
    Object.entries(worst).map(([k, v]) => `${k} ${v.toExponential(1)}`).join(", "),
  );
  model.dispose();
}

Deno.test("final (ConvNeXt) matches PyTorch: logits, loss, gradients, running stats (train and eval)", async () => {
  await goldenCase("final");
});

Deno.test("kernel7 (softmax head) matches PyTorch: probabilities, loss, gradients, running stats", async () => {
  await goldenCase("kernel7");
});

// ---------------------------------------------------------------- every step runs forward + backward

const NARROW: ModelOptions = { widths: [8, 16, 32, 64], depths: [1, 1, 1, 1], stemFeatures: 8 };

for (const stage of STAGES) {
  Deno.test(`${stage}: forward + backward at batch 2 (narrow) gives a finite loss and every gradient`, async () => {
    const before = poolStats().bytesInUse;
    const model: Model = buildModel(stage, { ...NARROW, seed: 1 });
    const params = model.namedParameters();
    const xs = new Float32Array(2 * 3 * 32 * 32).map((_, i) => Math.sin(i * 0.37));
    const loss = scope(() => {
      const l = crossEntropy(model.forward(tensor(xs, [2, 3, 32, 32])), [1, 8]);
      l.backward();
      return l;
    });
    const value = await loss.item();
    assert.ok(Number.isFinite(value), `${stage}: loss ${value}`);
    if (stage !== "final") {
      assert.ok(value >= Math.log(1 + 9 / Math.E) - 1e-4, "double softmax bounds the loss");
    }
    const grads = await readMany(params.map(([n, p]: [string, Tensor]) => {
      if (!p.grad) throw new Error(`${stage}: ${n} got no gradient`);
      return p.grad;
    }));
    grads.forEach((g, i) =>
      assert.ok(g.every(Number.isFinite), `${stage}: ${params[i][0]} has a non-finite gradient`)
    );
    loss.dispose();
    model.dispose();
    assert.equal(poolStats().bytesInUse, before, `${stage}: buffers leaked`);
  });
}

Deno.test("final: the notebook's drop-path rule, stage i takes linspace(0, dropPath, sum(depths))[i]", async () => {
  const { linspaceF32 } = await import("../models/zoo.ts");
  // torch.linspace(0, 0.3, 12) as Python floats
  const torchValues = [
    0.0,
    0.027272729203104973,
    0.054545458406209946,
    0.08181818574666977,
    0.10909091681241989,
  ];
  assert.deepEqual(linspaceF32(0, 0.3, 12).slice(0, 5), torchValues);
  const m = onMeta(() => buildModel("final", { dropPath: 0.3 }));
  const ps = m.namedModules().filter(([n]) => n.endsWith("drop_path"))
    .map(([n, mod]) => [n.split(".")[2], (mod as unknown as { p: number }).p] as const);
  assert.equal(ps.length, 12);
  for (const [stage, p] of ps) assert.equal(p, torchValues[Number(stage)], `stage ${stage}`);
});
