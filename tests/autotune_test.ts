// Autotune: shapes met with autotune on are queued, timed (largest first, within a budget), checked
// against the CPU reference, and their winners used and stored; tune keys are anchored to batch buckets,
// so another batch size of a tuned class takes its winner; the file store keeps winners per adapter; off,
// the planner gives the profile's defaults. No test here times anything: a fake timer and clock stand in.

import assert from "node:assert/strict";
import { cifar, noteCifar } from "./test_data.ts";
import { conv2d, randn, Rng, scope, sum } from "../mod.ts";
import {
  autotune,
  disableAutotune,
  enableAutotune,
  type KernelTimer,
  tuneOrder,
} from "../kernels/autotune.ts";
import { calibrate, repsFor } from "../kernels/tune_timer.ts";
import { GEMM1X1_VARIANTS } from "../kernels/conv1x1.ts";
import {
  clearWinners,
  convTuneKey,
  convVariants,
  defaultConvVariant,
  loadWinners,
  matmulTuneKey,
  pendingTunes,
  planConv,
  recordWinner,
  tuneCandidates,
  tunedWinners,
} from "../kernels/planner.ts";
import { nearestKey } from "../kernels/plan_core.ts";
import { setProfile } from "../kernels/profile.ts";
import { convOutSize, type ConvShape } from "../kernels/shapes.ts";
import type { ConvVariant } from "../kernels/variant.ts";
import { autotuneCachePath, fileStore } from "../experiments/host.ts";
import { gpu, resetPlannerContext } from "../kernels/runtime.ts";
import { parseTrainArgs } from "../experiments/config.ts";
import { setup } from "./helpers.ts";

noteCifar("autotune_test");

await setup();

const shape = (n: number, c: number, hw: number, o: number): ConvShape => ({
  n,
  c,
  h: hw,
  w: hw,
  o,
  k: 1,
  stride: 1,
  pad: 0,
  groups: 1,
  oh: convOutSize(hw, 1, 1, 0),
  ow: convOutSize(hw, 1, 1, 0),
});

/** A timer that runs nothing and reads `cost(variant)` ms per run; `onSample` sees each sample. */
function fakeTimer(cost: (variant: string) => number, onSample?: (ms: number) => void): KernelTimer {
  return {
    method: "fake",
    targetMs: 1,
    statistic: "median",
    noiseMs: 0,
    sample: (_run, reps, variant) => {
      const ms = cost(variant) * reps;
      onSample?.(ms);
      return Promise.resolve(ms);
    },
  };
}

/** Runs `fn` with autotune on in a fresh planner context (in memory, or with `store`). */
async function tuning<T>(
  fn: () => T | Promise<T>,
  store: Parameters<typeof enableAutotune>[0] = null,
): Promise<T> {
  const saved = resetPlannerContext();
  enableAutotune(store);
  try {
    return await fn();
  } finally {
    disableAutotune();
    resetPlannerContext(saved);
  }
}

/** Queues the three passes of a 1×1 conv of `s` (a real forward and backward at its batch). */
function meet(s: ConvShape): void {
  const rng = new Rng(3);
  scope(() => {
    const x = randn([s.n, s.c, s.h, s.w], rng, { requiresGrad: true });
    const w = randn([s.o, s.c, 1, 1], rng, { requiresGrad: true });
    sum(conv2d(x, w)).backward();
  });
}

Deno.test("autotune: queued shapes are timed, the fastest that matches the reference wins, runs and is stored", async () => {
  const saved: Record<string, string>[] = [];
  const s = shape(2, 8, 8, 12);
  await tuning(async () => {
    meet(s);
    const queued = pendingTunes().map(([k]) => k);
    for (const pass of ["forward", "inputGrad", "weightGrad"]) {
      assert.ok(queued.some((k) => k.startsWith(`conv.${pass}:~2,`)), `${pass} queued: ${queued}`);
    }
    const cands = tuneCandidates(convVariants(s, "forward"));
    const fast = cands.find((v) => v !== defaultConvVariant(s, "forward"))!;
    const calls: [number, number][] = [];
    const lines: string[] = [];
    const report = await autotune({
      timer: fakeTimer((v) => (v === fast ? 1 : 2)),
      progress: (done, total) => calls.push([done, total]),
      log: (l) => lines.push(l),
    });
    assert.equal(pendingTunes().length, 0);
    assert.deepEqual(report.left, []);
    assert.equal(report.queued, queued.length);
    // before the first shape, after each: 0..n of n
    assert.deepEqual(calls, Array.from({ length: queued.length + 1 }, (_, i) => [i, queued.length]));
    const fwd = report.results.find((r) => r.key.startsWith("conv.forward:"))!;
    assert.equal(fwd.winner, fast);
    assert.equal(fwd.margin, 1, "the second best takes twice as long");
    assert.deepEqual(fwd.rejected, {});
    assert.ok(
      lines.some((l) => l.startsWith(`autotune ${fwd.key}: ${fast} by 100.0% over `)),
      lines.join("\n"),
    );
    assert.deepEqual(planConv(s, "forward"), { variant: fast, source: "autotune" });
  }, { load: () => ({}), save: (w) => saved.push(w) });
  assert.equal(saved.length, 1);
  const key = convTuneKey(s, "forward");
  assert.match(saved[0][key], / among \S+ margin 100\.0% fake$/, "stored with its rivals and margin");
  assert.deepEqual(planConv(s, "forward"), { variant: defaultConvVariant(s, "forward"), source: "default" });
});

Deno.test("autotune times a 1×1 conv with the GELU epilogue it runs with apart from the plain one", async () => {
  await tuning(async () => {
    const s = shape(2, 8, 8, 12);
    for (const [pass, ep] of [["forward", "gelu"], ["inputGrad", "dgelu"]] as const) {
      assert.equal(planConv(s, pass, "", ep).source, "default");
      assert.ok(pendingTunes().some(([k]) => k === `conv.${pass}+${ep}:~2,8,8,8,12,1,1,0,1`));
    }
    const report = await autotune({ timer: fakeTimer(() => 1) });
    assert.equal(report.results.length, 2);
    for (const r of report.results) assert.deepEqual(r.rejected, {}, r.key);
    assert.equal(planConv(s, "forward", "", "gelu").source, "autotune");
    assert.equal(planConv(s, "inputGrad", "", "dgelu").source, "autotune");
    assert.equal(planConv(s, "forward").source, "default", "the plain forward is a shape of its own");
  });
});

Deno.test("autotune tunes largest first within its budget; what is left runs the defaults and is tuned later", async () => {
  await tuning(async () => {
    const sizes = [shape(2, 8, 4, 8), shape(2, 8, 8, 8), shape(2, 16, 8, 16)]; // smallest first
    for (const s of sizes) planConv(s, "forward");
    const keys = sizes.map((s) => convTuneKey(s, "forward"));
    assert.deepEqual(tuneOrder(pendingTunes()).map(([k]) => k), [...keys].reverse());
    let now = 0;
    const timer = fakeTimer(() => 1, () => now += 1000); // every sample takes a (fake) second
    const first = await autotune({ timer, clock: () => now, budgetS: 0.5 });
    assert.deepEqual(first.results.map((r) => r.key), [keys[2]], "the largest only");
    assert.deepEqual(first.left, [keys[1], keys[0]]);
    assert.deepEqual(planConv(sizes[0], "forward"), {
      variant: defaultConvVariant(sizes[0], "forward"),
      source: "default",
    });
    assert.deepEqual(pendingTunes().map(([k]) => k).sort(), [keys[0], keys[1]].sort());
    const zero = await autotune({ timer, clock: () => now, budgetS: 0 });
    assert.equal(zero.results.length, 0);
    assert.equal(zero.left.length, 2);
    const later = await autotune({ timer, clock: () => now, budgetS: 1e6 });
    assert.deepEqual(later.results.map((r) => r.key), [keys[1], keys[0]]);
    assert.deepEqual(later.left, []);
  });
});

Deno.test("tune keys are anchored to batch buckets: another batch size takes the nearest tuned bucket's winner", async () => {
  await tuning(() => {
    const s64 = shape(64, 8, 4, 12), key = convTuneKey(s64, "forward");
    assert.equal(key, "conv.forward:~64,8,4,4,12,1,1,0,1");
    assert.equal(convTuneKey(shape(52, 8, 4, 12), "forward"), key, "52 images share the bucket of 64");
    const cands = tuneCandidates(convVariants(s64, "forward"));
    const pick = cands.find((v) => v !== defaultConvVariant(s64, "forward"))!;
    recordWinner(key, pick, cands);
    for (const n of [52, 16, 2]) {
      assert.deepEqual(
        planConv(shape(n, 8, 4, 12), "forward"),
        { variant: pick, source: "autotune" },
        `${n} images`,
      );
    }
    assert.deepEqual(pendingTunes(), [], "nothing queued: no timing, no other kernel");
    // another per-image shape is another class
    assert.equal(planConv(shape(16, 8, 4, 16), "forward").source, "default");
    assert.deepEqual(pendingTunes().map(([k]) => k), ["conv.forward:~16,8,4,4,16,1,1,0,1"]);
  });
  // the nearest bucket, the larger on a tie; only one anchored size may differ
  const keys = [
    "conv.forward:~8,1,2",
    "conv.forward:~32,1,2",
    "conv.forward:~64,1,3",
    "conv.inputGrad:~16,1,2",
  ];
  assert.equal(nearestKey(keys, "conv.forward:~16,1,2"), "conv.forward:~32,1,2");
  assert.equal(nearestKey(keys, "conv.forward:~4,1,2"), "conv.forward:~8,1,2");
  assert.equal(nearestKey(keys, "conv.forward:~16,1,4"), null);
  const mm = (batch: number, m: number, k: number) =>
    matmulTuneKey({ batch, m, n: 10, k, transA: false, transB: true, batchA: false, batchB: false });
  assert.equal(mm(1, 52, 128), "matmul:~1,~64,~16,~128,01000");
  assert.equal(nearestKey([mm(1, 64, 128)], mm(1, 16, 128)), mm(1, 64, 128), "a linear layer's batch is m");
  assert.equal(nearestKey([mm(1, 64, 64)], mm(1, 16, 128)), null, "two sizes differ");
  assert.match(mm(1, 64, 6), /,notex$/, "the texture GEMM's candidacy is part of the key");
});

Deno.test("stored winners: notes round-trip; keys of the store before batch buckets are dropped", async () => {
  await tuning(() => {
    loadWinners({
      "conv.forward:2,8,8,8,12,1,1,0,1": "gemm1x1/tiled among gemm1x1/tiled,gemm1x1/vec4",
      "conv.forward:~2,8,8,8,12,1,1,0,1": "gemm1x1/tiled among gemm1x1/tiled,gemm1x1/vec4 margin 5.0% fake",
      "conv.forward:~4,8,8,8,12,1,1,0,1": "gemm1x1/tiled among gemm1x1/tiled,gemm1x1/vec4",
    });
    assert.deepEqual(tunedWinners(), {
      "conv.forward:~2,8,8,8,12,1,1,0,1": "gemm1x1/tiled among gemm1x1/tiled,gemm1x1/vec4 margin 5.0% fake",
      "conv.forward:~4,8,8,8,12,1,1,0,1": "gemm1x1/tiled among gemm1x1/tiled,gemm1x1/vec4",
    });
  });
});

Deno.test("a candidate that does not match the CPU reference is excluded, said in the log, and never wins", async () => {
  const scalar = GEMM1X1_VARIANTS.find((v) => v.name === "gemm1x1/scalar")!;
  const wrong: ConvVariant = {
    name: "gemm1x1/wrong",
    passes: scalar.passes,
    applies: scalar.applies,
    rank: () => null,
    run: () => {}, // writes nothing: the fastest of all, and wrong
    tuneKey: scalar.tuneKey,
  };
  GEMM1X1_VARIANTS.push(wrong);
  try {
    await tuning(async () => {
      const s = shape(2, 8, 8, 12);
      planConv(s, "forward");
      const cands = tuneCandidates(convVariants(s, "forward"));
      assert.ok(cands.includes(wrong.name));
      const lines: string[] = [];
      const report = await autotune({
        timer: fakeTimer((v) => (v === wrong.name ? 0.5 : 1 + cands.indexOf(v))),
        log: (l) => lines.push(l),
      });
      const [r] = report.results;
      assert.notEqual(r.winner, wrong.name);
      assert.equal(r.winner, cands.filter((v) => v !== wrong.name)[0], "the fastest of the others");
      assert.match(r.rejected[wrong.name], /does not match the CPU reference: y: element 0 is NaN/);
      assert.ok(lines.some((l) => l.includes(`${wrong.name} excluded: does not match the CPU reference`)));
      assert.notEqual(r.runnerUp, wrong.name, "the margin is over a candidate that may win");
      assert.deepEqual(planConv(s, "forward"), { variant: r.winner, source: "autotune" });
    });
  } finally {
    GEMM1X1_VARIANTS.splice(GEMM1X1_VARIANTS.indexOf(wrong), 1);
  }
});

Deno.test("the timer check: 2R runs must read twice R runs; a wait floor or zeros fail it", async () => {
  const linear = fakeTimer(() => 3);
  const c = await calibrate(linear, () => {}, "k");
  assert.ok(c.ok);
  assert.equal(c.ratio, 2);
  const floor: KernelTimer = {
    method: "floor",
    targetMs: 20,
    statistic: "median",
    noiseMs: 2,
    sample: () => Promise.resolve(12.4),
  };
  const f = await calibrate(floor, () => {}, "k");
  assert.ok(!f.ok);
  assert.equal(f.ratio, 1);
  const zeros: KernelTimer = {
    method: "zeros",
    targetMs: 2,
    statistic: "min",
    noiseMs: 0.01,
    sample: () => Promise.resolve(0),
  };
  assert.ok(!(await calibrate(zeros, () => {}, "k")).ok);
  // samples are sized to the timer's target
  assert.equal(repsFor(linear, 0.25), 4);
  assert.equal(repsFor(linear, 5), 1);
  assert.equal(repsFor(floor, 0.001), 10, "an estimate below the timer's noise counts as the noise");
  assert.equal(repsFor(zeros, 0), 200);
});

Deno.test("a stored winner is tuned again when the candidates it beat are not today's", () => {
  setProfile("software"); // the texture GEMM is no 1×1 candidate there (conv1x1Texture off)
  const s = shape(2, 8, 8, 12);
  try {
    const all = convVariants(s, "forward");
    assert.ok(all.includes("gemm1x1/texture"));
    assert.ok(!tuneCandidates(all).includes("gemm1x1/texture"));
    // both operand paths of the vec4 GEMM are timed: which wins is the CPU's
    assert.ok(["gemm1x1/vec4", "gemm1x1/vec4-texture"].every((v) => tuneCandidates(all).includes(v)));
    const key = "conv.forward:~2,8,8,8,12,1,1,0,1";
    const among = tuneCandidates(all).join(",");
    for (
      const stored of [
        "gemm1x1/texture",
        `gemm1x1/texture among ${among}`,
        "gemm1x1/tiled among gemm1x1/tiled",
      ]
    ) {
      enableAutotune({ load: () => ({ [key]: stored }), save: () => {} });
      assert.equal(planConv(s, "forward").source, "default", stored);
      assert.deepEqual(pendingTunes().map(([k]) => k), [key]);
      disableAutotune();
      clearWinners();
    }
    // the same winner among today's candidates runs
    enableAutotune({ load: () => ({ [key]: `gemm1x1/tiled among ${among}` }), save: () => {} });
    assert.deepEqual(planConv(s, "forward"), { variant: "gemm1x1/tiled", source: "autotune" });
  } finally {
    disableAutotune();
    clearWinners();
    setProfile(null);
  }
});

Deno.test("autotune file store: winners round-trip per adapter; unreadable files are empty", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const path = `${dir}/sub/cache.json`;
    const st = fileStore(path);
    assert.deepEqual(st.load(), {});
    st.save({ "conv.forward:1,2,3": "gemm1x1/vec4" });
    assert.deepEqual(fileStore(path).load(), { "conv.forward:1,2,3": "gemm1x1/vec4" });
    Deno.writeTextFileSync(path, "{not json");
    assert.deepEqual(fileStore(path).load(), {});
    const p = autotuneCachePath(gpu());
    assert.match(p, /deno\d+\.\d+\.\d+\.json$/);
    assert.ok(!/\s/.test(p.slice(p.lastIndexOf("/"))), "no spaces in the file name");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("train flags: --plan, --no-autotune, --autotune-budget and --no-replay", () => {
  assert.deepEqual(parseTrainArgs(["--plan", "conv=tiled", "--no-autotune", "--no-replay"]).kernels, {
    plan: "conv=tiled",
    autotune: false,
    replay: false,
  });
  assert.deepEqual(parseTrainArgs([]).kernels, { plan: undefined, autotune: undefined, replay: undefined });
  assert.equal(parseTrainArgs(["--autotune-budget", "12.5"]).config.autotuneBudget, 12.5);
  assert.equal(parseTrainArgs(["--autotune-budget", "0"]).config.autotuneBudget, 0);
  assert.throws(() => parseTrainArgs(["--autotune-budget=-1"]), /--autotune-budget needs a number ≥ 0/);
});

Deno.test("train with autotune on: tunes before its first step and caches the winners per adapter", {
  ignore: !cifar.dir,
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    const data = cifar.dir!;
    const args = [
      "--quick",
      "--train-limit",
      "64",
      "--eval-limit",
      "32",
      "--epochs",
      "1",
      "--batch-size",
      "32",
      "--autotune-budget",
      "5",
    ];
    const cmd = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "experiments/train.ts", ...args, "--out", `${dir}/out`, "--data-dir", data],
      cwd: new URL("..", import.meta.url).pathname,
      env: { CONVNEXT_AUTOTUNE: "1", CONVNEXT_AUTOTUNE_CACHE: `${dir}/cache` },
      stdout: "piped",
      stderr: "piped",
    });
    const r = await cmd.output();
    const out = new TextDecoder().decode(r.stdout), err = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 0, err);
    assert.match(out, /kernels: autotune on \(winners cached in .*\/cache\/.*\.json\)/);
    assert.match(out, /autotune: timing the kernel variants of \d+ shapes, largest first, within 5 s/);
    assert.match(out, /autotune: timer \S+, checked on /);
    // the budget's first shape is always tuned, unless the timer failed its check (a machine too busy)
    const m =
      /autotune: tuned (\d+) of \d+ shapes in [\d.]+ s(?: \(timer \S+\))?, (?:none|\d+) left for later/.exec(
        out,
      );
    assert.ok(m, out);
    if (m[1] === "0") {
      assert.match(out, /autotune: no timer reads a known cost right/);
      return;
    }
    const files = [...Deno.readDirSync(`${dir}/cache`)].map((e) => e.name);
    assert.equal(files.length, 1);
    const winners = JSON.parse(Deno.readTextFileSync(`${dir}/cache/${files[0]}`));
    assert.ok(Object.keys(winners).length > 0);
    assert.ok(Object.keys(winners).every((k) => /:~32,|^matmul:/.test(k)), "keys of the batch's bucket");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
