// Autotune: shapes met with autotune on are queued, timed once, and their winners used and stored; the
// file store keeps them per adapter; off, the planner gives the profile's defaults.

import assert from "node:assert/strict";
import { cifar, noteCifar } from "./test_data.ts";
import { conv2d, randn, Rng, scope, sum } from "../mod.ts";
import { autotune, disableAutotune, enableAutotune } from "../kernels/autotune.ts";
import {
  clearWinners,
  convVariants,
  defaultConvVariant,
  pendingTunes,
  planConv,
  tuneCandidates,
} from "../kernels/planner.ts";
import { setProfile } from "../kernels/profile.ts";
import { convOutSize, type ConvShape } from "../kernels/shapes.ts";
import { autotuneCachePath, fileStore } from "../experiments/host.ts";
import { gpu } from "../kernels/runtime.ts";
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

Deno.test("autotune: queued shapes are timed, the winner runs and is stored; off gives the defaults", async () => {
  const saved: Record<string, string>[] = [];
  enableAutotune({ load: () => ({}), save: (w) => saved.push(w) });
  try {
    const rng = new Rng(3);
    const s = shape(2, 8, 8, 12);
    scope(() => {
      const x = randn([2, 8, 8, 8], rng, { requiresGrad: true });
      const w = randn([12, 8, 1, 1], rng, { requiresGrad: true });
      sum(conv2d(x, w)).backward();
    });
    const queued = pendingTunes().map(([k]) => k);
    for (const pass of ["forward", "inputGrad", "weightGrad"]) {
      assert.ok(queued.some((k) => k.startsWith(`conv.${pass}:`)), `${pass} queued: ${queued}`);
    }
    const calls: [number, number][] = [];
    const results = await autotune({ reps: 1, progress: (done, total) => calls.push([done, total]) });
    assert.equal(pendingTunes().length, 0);
    // before the first shape, after each, and done: 0..n of n
    assert.deepEqual(calls, Array.from({ length: queued.length + 1 }, (_, i) => [i, queued.length]));
    for (const r of results) {
      assert.ok(Object.keys(r.ms).includes(r.winner), `${r.key}: winner ${r.winner} among the timed`);
      assert.ok(Object.values(r.ms).every((t) => t >= 0));
    }
    const fwd = planConv(s, "forward");
    assert.equal(fwd.source, "autotune");
    assert.ok(convVariants(s, "forward").includes(fwd.variant));
    assert.equal(saved.length, 1);
    assert.ok(
      Object.values(saved[0]).some((v) => v.startsWith(`${fwd.variant} among `)),
      "stored with its rivals",
    );
  } finally {
    disableAutotune();
    clearWinners();
  }
  const s = shape(2, 8, 8, 12);
  assert.deepEqual(planConv(s, "forward"), { variant: defaultConvVariant(s, "forward"), source: "default" });
});

Deno.test("autotune times a 1×1 conv with the GELU epilogue it runs with apart from the plain one", async () => {
  enableAutotune(null);
  try {
    const s = shape(2, 8, 8, 12);
    for (const [pass, ep] of [["forward", "gelu"], ["inputGrad", "dgelu"]] as const) {
      assert.equal(planConv(s, pass, "", ep).source, "default");
      assert.ok(pendingTunes().some(([k]) => k === `conv.${pass}+${ep}:2,8,8,8,12,1,1,0,1`));
    }
    const results = await autotune({ reps: 1 });
    assert.equal(results.length, 2);
    for (const r of results) assert.ok(Object.values(r.ms).every((t) => t >= 0), r.key);
    assert.equal(planConv(s, "forward", "", "gelu").source, "autotune");
    assert.equal(planConv(s, "inputGrad", "", "dgelu").source, "autotune");
    assert.equal(planConv(s, "forward").source, "default", "the plain forward is a shape of its own");
  } finally {
    disableAutotune();
    clearWinners();
  }
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
    const key = "conv.forward:2,8,8,8,12,1,1,0,1";
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

Deno.test("train flags: --plan and --no-autotune", () => {
  assert.deepEqual(parseTrainArgs(["--plan", "conv=tiled", "--no-autotune"]).kernels, {
    plan: "conv=tiled",
    autotune: false,
  });
  assert.deepEqual(parseTrainArgs([]).kernels, { plan: undefined, autotune: undefined });
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
    assert.match(out, /autotune: timing the kernel variants of \d+ shapes \(winners are cached/);
    assert.match(out, /autotune: timed the kernel variants of \d+ shapes/);
    const files = [...Deno.readDirSync(`${dir}/cache`)].map((e) => e.name);
    assert.equal(files.length, 1);
    const winners = JSON.parse(Deno.readTextFileSync(`${dir}/cache/${files[0]}`));
    assert.ok(Object.keys(winners).some((k) => k.startsWith("conv.weightGrad:")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
