// nn: Module (names, modes, state dicts, meta modules), the layers and PyTorch's default initialisation.

import assert from "node:assert/strict";
import { dryRun, poolStats } from "../kernels/runtime.ts";
import { Rng } from "../autograd/random.ts";
import { currentModule, empty, meta, record, scope, type Tensor, tensor } from "../autograd/tensor.ts";
import { sum } from "../autograd/ops/reduce.ts";
import {
  AdaptiveAvgPool2d,
  BatchNorm2d,
  Conv2d,
  Flatten,
  GELU,
  GroupNorm,
  Identity,
  LayerNorm,
  LayerScaler,
  Linear,
  ReLU,
  Sequential,
  StochasticDepth,
} from "../nn/layers.ts";
import { kaimingUniformBound } from "../nn/init.ts";
import { forwardAs, Module, onMeta, readMany, traceModules } from "../nn/module.ts";
import { main as infoMain, modelInfo } from "../experiments/info.ts";
import { setPlanOverride } from "../kernels/planner.ts";
import { assertClose, setup } from "./helpers.ts";

await setup();

function tinyNet(rng = new Rng(3)): Sequential {
  return new Sequential(
    new Conv2d(3, 4, 3, { padding: 1, rng }),
    new BatchNorm2d(4),
    new ReLU(),
    new Sequential(
      new Conv2d(4, 4, 3, { padding: 1, groups: 4, bias: false, rng }),
      new GroupNorm(1, 4),
      new GELU(),
    ),
    new LayerScaler(0.5, 4),
    new StochasticDepth(0.3, new Rng(1)),
    new AdaptiveAvgPool2d(1),
    new Flatten(1),
    new LayerNorm(4),
    new Linear(4, 2, { rng }),
    new Identity(),
  );
}

Deno.test("Module: PyTorch's dotted names and order, parameters, buffers, state spec", () => {
  const net = onMeta(() => tinyNet());
  assert.deepEqual(Object.keys(net.stateSpec()), [
    "0.weight",
    "0.bias",
    "1.weight",
    "1.bias",
    "1.running_mean",
    "1.running_var",
    "1.num_batches_tracked",
    "3.0.weight",
    "3.1.weight",
    "3.1.bias",
    "4.gamma",
    "8.weight",
    "8.bias",
    "9.weight",
    "9.bias",
  ]);
  assert.deepEqual(net.stateSpec()["1.num_batches_tracked"], { shape: [], dtype: "I64", kind: "buffer" });
  assert.deepEqual(net.stateSpec()["3.0.weight"].shape, [4, 1, 3, 3]);
  assert.equal(net.numParameters(), 4 * 27 + 4 + 8 + 36 + 8 + 4 + 8 + 8 + 2);
});

Deno.test("Module: train()/eval() reach every descendant; BatchNorm counts training batches only", async () => {
  const net = tinyNet();
  assert.ok(net.namedModules().every(([, m]) => m.training));
  net.eval();
  assert.ok(net.namedModules().every(([, m]) => !m.training));
  const x = tensor(new Float32Array(2 * 3 * 5 * 5).map((_, i) => Math.sin(i)), [2, 3, 5, 5]);
  scope(() => net.forward(x));
  assert.equal((await net.stateDict())["1.num_batches_tracked"][0], 0);
  net.train();
  scope(() => net.forward(x));
  scope(() => net.forward(x));
  const sd = await net.stateDict();
  assert.equal(sd["1.num_batches_tracked"][0], 2);
  assert.ok(sd["1.running_mean"].some((v) => v !== 0), "running mean moved");
  x.dispose();
  net.dispose();
});

Deno.test("Module: parameters survive scopes, get gradients, and names are set", async () => {
  const inner: Sequential[] = [];
  const net = scope(() => {
    inner.push(tinyNet()); // built inside a scope and not returned: its parameters are still kept
    return tinyNet();
  });
  assert.ok(inner[0].parameters().every((p) => !p.disposed));
  inner[0].dispose();
  const params = net.namedParameters();
  assert.equal(params.length, 12);
  assert.ok(params.every(([n, p]) => p.name === n && p.requiresGrad && !p.disposed));
  net.eval(); // deterministic (no drop path)
  const x = tensor(new Float32Array(2 * 3 * 6 * 6).map((_, i) => Math.cos(i * 0.3)), [2, 3, 6, 6]);
  scope(() => sum(net.forward(x)).backward());
  for (const [n, p] of params) assert.ok(p.grad && (await p.grad.toArray()).every(Number.isFinite), n);
  x.dispose();
  net.dispose();
});

Deno.test("Module: stateDict → loadStateDict round trip, and clear errors", async () => {
  const a = tinyNet(new Rng(1)), b = tinyNet(new Rng(2));
  const sa = await a.stateDict();
  sa["1.num_batches_tracked"] = Float32Array.of(7);
  b.loadStateDict(sa);
  const sb = await b.stateDict();
  for (const n of Object.keys(sa)) assert.deepEqual(sb[n], sa[n], n);
  const missing = { ...sa };
  delete missing["4.gamma"];
  assert.throws(() => b.loadStateDict(missing), /missing tensor "4.gamma" \(shape \[4\]\)/);
  assert.throws(
    () => b.loadStateDict({ ...sa, "9.weight": new Float32Array(3) }),
    /"9.weight" has 3 values, the model expects shape \[2, 4\] \(8 values\)/,
  );
  assert.throws(
    () => b.loadStateDict({ ...sa, "extra.weight": new Float32Array(1) }),
    /unexpected tensor "extra.weight"/,
  );
  b.loadStateDict(missing, { strict: false }); // non-strict skips absent entries
  a.dispose();
  b.dispose();
});

Deno.test("onMeta: meta parameters, forward and backward in a dry run, values refused clearly", async () => {
  const before = poolStats();
  const net = onMeta(() => tinyNet());
  assert.ok(net.meta);
  const params = net.namedParameters();
  assert.ok(params.every(([, p]) => p.isMeta && p.requiresGrad));
  assert.deepEqual(params[0][1].shape, [4, 3, 3, 3]);
  // the model's own forward and backward run on shapes alone: gradients are meta tensors of the
  // parameters' shapes, and no GPU memory is touched
  const y = dryRun(() => {
    const out = net.forward(meta([2, 3, 8, 8]));
    sum(out).backward();
    return out;
  });
  assert.deepEqual(y.shape, [2, 2]);
  for (const [n, p] of params) {
    assert.ok(p.grad?.isMeta, `${n} has a meta gradient`);
    assert.deepEqual(p.grad.shape, p.shape, n);
  }
  assert.deepEqual(poolStats(), before);
  // values: none to read, upload or compute with outside a dry run
  await assert.rejects(() => y.toArray(), /\[2, 2\] is a meta tensor \(shape only\): it has no values/);
  await assert.rejects(() => readMany([params[0][1]]), /0\.weight \[4, 3, 3, 3\] is a meta tensor/);
  await assert.rejects(() => net.stateDict(), /stateDict: "0.weight" is a meta tensor/);
  assert.throws(
    () => net.loadStateDict({}, { strict: false }),
    /loadStateDict: "0" was built on meta \(shapes only\) and cannot hold values/,
  );
  assert.throws(
    () => net.forward(meta([2, 3, 8, 8])),
    /Conv2d.weight has no values: the module was built on meta/,
  );
  assert.throws(
    () => sum(meta([3])),
    /\[3\] is a meta tensor \(shape only\): ops take it only inside dryRun/,
  );
  // shape errors are the ops' own, as on the GPU
  assert.throws(() => dryRun(() => net.forward(meta([2, 5, 8, 8]))), /conv2d/);
  const rows = net.summary([1, 3, 8, 8]);
  assert.equal(rows[0].flops, 2 * 4 * 8 * 8 * 27);
  assert.equal(rows[3].flops, 2 * 4 * 8 * 8 * 9); // depthwise: 9 MACs per output
  assert.equal(rows[rows.length - 2].flops, 2 * 4 * 2); // Linear(4, 2) on one row
  assert.deepEqual(rows.map((r) => r.name), [
    "0",
    "1",
    "2",
    "3.0",
    "3.1",
    "3.2",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "10",
  ]);
  assert.deepEqual(rows[9], {
    name: "7",
    type: "Flatten",
    inShape: [1, 4, 1, 1],
    outShape: [1, 4],
    params: 0,
    flops: 0,
  });
  assert.deepEqual(rows[rows.length - 1].outShape, [1, 2]);
});

Deno.test("summary of a real module: same rows as on meta, no side effects, modes restored", async () => {
  const net = tinyNet();
  const bn = net.at(1) as BatchNorm2d;
  net.at(3).eval(); // a mixed state, which summary must give back as it found it
  const modes = net.namedModules().map(([, m]) => m.training);
  const rngState = (net.at(5) as StochasticDepth).rng.getState();
  const before = poolStats().bytesInUse;
  assert.deepEqual(net.summary([2, 3, 8, 8]), onMeta(() => tinyNet()).summary([2, 3, 8, 8]));
  assert.equal(poolStats().bytesInUse, before);
  assert.deepEqual(net.namedModules().map(([, m]) => m.training), modes);
  assert.equal(bn.numBatchesTracked, 0);
  assert.deepEqual((net.at(5) as StochasticDepth).rng.getState(), rngState, "no stochastic-depth draw");
  assert.ok(net.parameters().every((p) => !p.isMeta && p.grad === null));
  const values = await readMany(net.parameters());
  assert.ok(values.every((v) => v.every(Number.isFinite)));
  net.dispose();
});

/** A layer whose backward notes which module `currentModule()` names while it runs. */
class Probe extends Module {
  constructor(readonly log: string[]) {
    super();
  }

  forward(x: Tensor): Tensor {
    return record(empty(x.shape), [x], (g) => {
      this.log.push(`backward in "${currentModule()}"`);
      return [g];
    });
  }
}

Deno.test("traceModules: forwards run under their dotted names, backward rules under the recording module's", () => {
  const log: string[] = [];
  const net = onMeta(() => new Sequential(new Conv2d(3, 4, 1), new Sequential(new ReLU(), new Probe(log))));
  const inner = net.at(1);
  const forward = inner.forward;
  dryRun(() =>
    traceModules(net, () => {
      const y = net.forward(meta([2, 3, 4, 4]));
      log.push(`after forward "${currentModule()}"`);
      traceModules(net.at(0), () => net.at(0).forward(meta([1, 3, 2, 2])), { // traces nest
        enter: (name) => log.push(`nested > "${name}" in "${currentModule()}"`),
      });
      y.backward(meta(y.shape));
    }, {
      enter: (name, m, x) => log.push(`> "${name}" ${m.typeName} [${x.shape}] in "${currentModule()}"`),
      exit: (name, _m, _x, y) => log.push(`< "${name}" [${y.shape}]`),
    })
  );
  assert.deepEqual(log, [
    `> "" Sequential [2,3,4,4] in ""`,
    `> "0" Conv2d [2,3,4,4] in "0"`,
    `< "0" [2,4,4,4]`,
    `> "1" Sequential [2,4,4,4] in "1"`,
    `> "1.0" ReLU [2,4,4,4] in "1.0"`,
    `< "1.0" [2,4,4,4]`,
    `> "1.1" Probe [2,4,4,4] in "1.1"`,
    `< "1.1" [2,4,4,4]`,
    `< "1" [2,4,4,4]`,
    `< "" [2,4,4,4]`,
    `after forward ""`,
    `nested > "" in ""`, // the nested trace's hooks run too; the first trace's names stay current
    `> "0" Conv2d [1,3,2,2] in "0"`,
    `< "0" [1,4,2,2]`,
    `backward in "1.1"`,
  ]);
  assert.equal(inner.forward, forward, "forward restored");
  assert.ok(!Object.hasOwn(inner, "forward"));
  assert.equal(currentModule(), "");
  assert.throws(() => traceModules(net, () => Promise.resolve()), /fn must be synchronous/);
  assert.ok(!Object.hasOwn(inner, "forward"), "restored after a throw");
});

Deno.test("forwardAs: a body run in a module's place enters the module as its forward would, under every trace", () => {
  const net = onMeta(() => new Sequential(new Conv2d(3, 4, 1), new ReLU()));
  const relu = net.at(1);
  const log: string[] = [];
  const body = (x: Tensor) => {
    log.push(`body in "${currentModule()}"`);
    return x;
  };
  dryRun(() => {
    forwardAs(relu, meta([1, 4, 2, 2]), body); // untraced: the body alone
    traceModules(net, () =>
      traceModules(relu, () => void forwardAs(relu, meta([1, 4, 2, 2]), body), {
        enter: (name) => log.push(`nested > "${name}"`),
      }), {
      enter: (name, m, x) => log.push(`> "${name}" ${m.typeName} [${x.shape}]`),
      exit: (name) => log.push(`< "${name}"`),
    });
    forwardAs(relu, meta([1, 4, 2, 2]), body); // the traces are over
  });
  assert.deepEqual(log, [
    `body in ""`,
    `nested > ""`, // as a forward under nested traces: the first trace's names stay current
    `> "1" ReLU [1,4,2,2]`,
    `body in "1"`,
    `< "1"`,
    `body in ""`,
  ]);
});

Deno.test("PyTorch default initialisation: kaiming_uniform(a=√5) weights, ±1/√fan_in biases", async () => {
  assert.ok(Math.abs(kaimingUniformBound(288) * Math.sqrt(288) - 1) < 1e-15);
  const conv = new Conv2d(32, 64, 3, { rng: new Rng(9) });
  const lin = new Linear(100, 50, { rng: new Rng(9) });
  const sd = {
    ...(await conv.stateDict()),
    ...Object.fromEntries(Object.entries(await lin.stateDict()).map(([k, v]) => [`l.${k}`, v])),
  };
  const check = (a: Float32Array, bound: number, what: string) => {
    const max = a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(max <= bound && max > 0.95 * bound, `${what}: max ${max} vs bound ${bound}`);
    const mean = a.reduce((s, v) => s + v, 0) / a.length;
    const variance = a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length;
    assert.ok(Math.abs(mean) < 0.1 * bound, `${what}: mean ${mean}`);
    if (a.length > 1000) {
      assert.ok(Math.abs(variance / (bound * bound / 3) - 1) < 0.05, `${what}: variance ${variance}`);
    }
  };
  check(sd.weight, 1 / Math.sqrt(288), "conv weight");
  check(sd.bias, 1 / Math.sqrt(288), "conv bias");
  check(sd["l.weight"], 0.1, "linear weight");
  check(sd["l.bias"], 0.1, "linear bias");
  conv.dispose();
  lin.dispose();
});

Deno.test("LayerScaler is gamma[:, None, None] · x; StochasticDepth is the identity in eval and at p = 0", async () => {
  const ls = new LayerScaler(1e-6, 3);
  ls.loadStateDict({ gamma: Float32Array.of(1, 2, 3) });
  const x = tensor(new Float32Array(2 * 3 * 2 * 2).map((_, i) => i), [2, 3, 2, 2]);
  const y = scope(() => ls.forward(x));
  const expect = Array.from({ length: 24 }, (_, i) => i * (1 + (Math.floor(i / 4) % 3)));
  assertClose(await y.toArray(), expect);
  const sdp = new StochasticDepth(0.5).eval();
  assert.equal(sdp.forward(x), x);
  assert.equal(new StochasticDepth(0).forward(x), x);
  [x, y].forEach((t) => t.dispose());
  ls.dispose();
});

Deno.test("deno task info: parameters and FLOPs, JSON, clear errors", async () => {
  const info = modelInfo("final", { widths: [16, 32, 64, 128], depths: [1, 1, 3, 1], stemFeatures: 16 });
  assert.equal(info.parameters, 305_690);
  assert.equal(info.flops, 32_225_792);
  assert.ok(info.layers.some((l) => l.name === "encoder.stages.2.3.layer_scaler"));
  const out: string[] = [], err: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (s: string) => out.push(s);
  console.error = (s: string) => err.push(s);
  try {
    assert.equal(await infoMain(["--stage", "kernel7", "--json"]), 0);
    assert.equal(await infoMain(["--stage", "resnet50"]), 1);
    assert.equal(await infoMain(["--stage", "final", "--widths", "a,b"]), 1);
    assert.equal(await infoMain(["--nope"]), 2);
  } finally {
    [console.log, console.error] = [log, error];
  }
  const j = JSON.parse(out[0]);
  assert.equal(j.stage, "kernel7");
  assert.equal(j.plan, undefined, "no plan without --plan");
  assert.equal(j.parameters, 11_256_970);
  assert.equal(j.flops, 1_213_564_928);
  assert.match(
    err[0],
    /Unknown stage "resnet50". Valid stages: base, stage_ratio, patchify, resnextify, inverted, kernel7, final/,
  );
  assert.match(err[1], /--widths expects comma-separated positive integers/);
  assert.match(err[2], /Unknown option '--nope'/);
});

Deno.test("deno task info --plan: a variant for every conv pass of a training step; --force changes it", async () => {
  const narrow = [
    "--stage",
    "final",
    "--widths",
    "16,32,64,128",
    "--depths",
    "1,1,3,1",
    "--stem-features",
    "16",
  ];
  const run = async (extra: string[]) => {
    const out: string[] = [];
    const log = console.log;
    console.log = (s: string) => out.push(s);
    try {
      assert.equal(
        await infoMain([...narrow, "--plan", "--json", "--batch", "4", "--no-autotune", ...extra]),
        0,
      );
    } finally {
      console.log = log;
    }
    return JSON.parse(out[0]) as {
      layers: { name: string; type: string }[];
      plan: { layer: string; op: string; pass: string; variant: string; source: string }[];
    };
  };
  const info = await run([]);
  const convs = info.layers.filter((l) => l.type === "Conv2d").map((l) => l.name);
  for (const name of convs) {
    const passes = new Set(info.plan.filter((p) => p.layer === name && p.op === "conv").map((p) => p.pass));
    assert.ok(passes.has("forward"), `${name} forward planned`);
    if (name !== convs[0]) assert.ok(passes.has("inputGrad"), `${name} input gradient planned`);
    assert.ok(passes.has("weightGrad") || passes.has("forward"), name);
  }
  assert.ok(info.plan.every((p) => p.source === "default" && p.variant.length > 0));
  assert.ok(info.plan.some((p) => p.variant.startsWith("gemm1x1/")));
  const forced = await run(["--force", "conv=scalar"]).finally(() => setPlanOverride(null));
  const pointwise = forced.plan.filter((p) => p.op === "conv" && p.variant.startsWith("gemm1x1/"));
  assert.ok(
    pointwise.length > 0 && pointwise.every((p) => p.variant === "gemm1x1/scalar" && p.source === "override"),
  );
  assert.equal(forced.plan.length, info.plan.length, "the override changes variants, not passes");
});
