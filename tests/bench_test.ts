// The benchmark harness on tiny shapes: it runs, validates every kernel row against its op's CPU reference
// before timing it (and a wrong result fails the row), reports numbers, and its report has the structure
// `--json` promises. No timing is asserted (speed is what `deno task bench` reports, not what tests check).

import assert from "node:assert/strict";
import { parseBenchArgs } from "../bench/main.ts";
import { evaluateTargets, formatReport, runBench } from "../bench/run.ts";
import { benchKernels, isTimed } from "../bench/kernels.ts";
import type { Ceilings } from "../bench/ceilings.ts";
import { NARROW } from "../bench/steps.ts";
import {
  compareSamples,
  compareTorch,
  formatTorchSection,
  roundSchedule,
  runTorchScript,
  sampleStats,
  torchCase,
  torchRows,
  type TorchSection,
} from "../bench/torch.ts";
import { setup } from "./helpers.ts";

await setup();

const finitePositive = (x: number, what: string) => assert.ok(Number.isFinite(x) && x > 0, `${what} = ${x}`);

Deno.test("bench CLI: defaults, --quick, --compare tfjs, --filter and bad arguments", () => {
  const d = parseBenchArgs([]);
  assert.deepEqual(d.opts.sections, ["kernels", "steps"]);
  assert.equal(d.opts.batch, 8);
  assert.ok(d.opts.notes!.some((n) => /batch 8/.test(n)), "the defaults say what they reduce");
  const q = parseBenchArgs(["--quick", "--compare", "tfjs", "--filter", "dwconv", "--json"]);
  assert.equal(q.opts.batch, 2);
  assert.ok(q.opts.sections.includes("tfjs"));
  assert.equal(q.opts.filter, "dwconv");
  assert.equal(q.json, true);
  const f = parseBenchArgs(["--full"]);
  assert.equal(f.opts.batch, 64);
  assert.ok(f.opts.steps.every((s) => s.batch === 64));
  const t = parseBenchArgs(["--compare", "torch"]);
  assert.deepEqual(t.opts.sections, ["kernels", "steps", "torch"]);
  assert.deepEqual(parseBenchArgs(["--compare", "tfjs,torch", "--only", "steps"]).opts.sections, [
    "steps",
    "tfjs",
    "torch",
  ]);
  assert.throws(() => parseBenchArgs(["--compare", "caffe"]), /"tfjs", "torch" or "tfjs,torch"/);
  assert.throws(() => parseBenchArgs(["--stages", "resnet"]), /unknown stage/);
  assert.throws(() => parseBenchArgs(["--batch", "0"]), /positive integer/);
});

Deno.test("bench harness on a tiny shape: finite, positive numbers in the documented structure", async () => {
  const report = await runBench({
    // (the PyTorch section, child processes that compile their own kernels, has its own test below)
    sections: ["kernels", "steps"],
    batch: 1,
    stages: ["final"],
    extraStages: ["base"],
    // a few layers of each kind: depthwise, norm, activation, 1×1 conv (and its GEMMs), 3×3 conv
    filter: "dwconv 7×7 128|GroupNorm 128|GELU 512|1×1 128→512|conv 3×3|step",
    model: NARROW,
    steps: [{ name: "final narrow", stage: "final", batch: 2, model: NARROW }],
    adamwStage: null,
    runs: 2,
    minSampleMs: 1,
    stepRuns: 1,
    ceiling: { fmaInvocations: 4096, copyMiB: 1 },
  });
  finitePositive(report.ceilings.fmaGflops, "FMA peak");
  finitePositive(report.ceilings.copyGBs, "copy bandwidth");
  const kinds = new Set(report.kernels.map((k) => k.kind));
  for (const k of ["dwconv", "norm", "act", "conv1x1", "gemm", "conv"]) assert.ok(kinds.has(k), `a ${k} row`);
  // every row was validated (on the row's own batch here: tiny shapes), passed, then was timed
  for (const k of report.kernels) {
    const what = `${k.name} ${k.pass}`;
    assert.equal(k.validation.status, "passed", `${what}: ${k.validation.detail}`);
    assert.equal(k.validation.op, k.op, what);
    assert.ok(k.validation.worst <= 1 && k.validation.ms > 0, `${what}: validation ran`);
    assert.deepEqual([k.validation.batch, k.validation.reduced], [1, false], what);
    assert.ok(isTimed(k), `${what} timed`);
  }
  const ops = new Set(report.kernels.map((k) => k.op));
  for (const op of ["conv2d", "groupNorm", "gelu", "matmul"]) assert.ok(ops.has(op), `a ${op} row`);
  // one name per op: the GroupNorm layer's row is named as the op is
  assert.ok(report.kernels.some((k) => /^groupNorm 128 @/.test(k.name) && k.op === "groupNorm"));
  for (const k of report.kernels.filter(isTimed)) {
    const what = `${k.name} ${k.pass}`;
    finitePositive(k.timing.medianMs, `${what} ms`);
    assert.ok(k.timing.minMs <= k.timing.medianMs && k.timing.medianMs <= k.timing.maxMs, what);
    finitePositive(k.bytes, `${what} bytes`);
    finitePositive(k.gbs, `${what} GB/s`);
    finitePositive(k.pctRoofline, `${what} % of roofline`);
    if (k.kind === "conv1x1" || k.kind === "gemm" || k.kind === "dwconv") {
      finitePositive(k.gflops, `${what} GFLOP/s`);
    }
    assert.ok(["compute", "memory"].includes(k.bound));
  }
  const passes = new Set(report.kernels.filter((k) => k.kind === "conv1x1").map((k) => k.pass));
  assert.deepEqual([...passes].sort(), ["backward (input)", "backward (weight)", "forward"]);
  assert.equal(report.steps.length, 1);
  const s = report.steps[0];
  finitePositive(s.timing.medianMs, "step ms");
  finitePositive(s.imagesPerSec, "images/s");
  assert.equal(s.params, 305690);
  finitePositive(s.paramBytes, "parameter bytes");
  if (report.adapter.timestampQuery) {
    finitePositive(s.kernelMs!, "sum of kernel times");
    assert.ok(s.passes! > 10 && s.topKernels.length > 0);
  }
  assert.equal(report.torch, null);
  const vsTorch = report.targets.find((x) =>
    /final narrow step \(batch 2\): ours \/ PyTorch CPU/.test(x.name)
  );
  assert.equal(vsTorch?.detail, "not measured (run with --compare torch)");
  assert.ok(report.targets.length >= 5);
  assert.deepEqual(report.errors, []);
  const json = JSON.parse(JSON.stringify(report));
  assert.equal(json.kernels.length, report.kernels.length);
  assert.ok(json.kernels.every((k: { validation: { status: string } }) => k.validation.status === "passed"));
  const text = formatReport(report);
  for (
    const h of ["## Ceilings", "## Kernels", "## Training steps", "## Targets"]
  ) {
    assert.ok(text.includes(h), h);
  }
  console.log(text);
});

Deno.test("bench validation: a wrong kernel result fails its row, which is reported and not timed", async () => {
  const errors: string[] = [], seen: string[] = [];
  const ceil = { fmaGflops: 1, copyGBs: 1, ridge: 1, detail: [] } as unknown as Ceilings;
  const rows = await benchKernels(ceil, {
    batch: 1,
    stages: ["final"],
    extraStages: [],
    model: NARROW,
    // (a GEMM row comes with the 1×1 conv it is taken from)
    filter: (s) => /groupNorm 128|1×1 128→512|AdamW/i.test(s),
    timing: { runs: 1, minSampleMs: 1, warmup: 1 },
    adamwStage: "final",
    errors,
    // the injected failure: one value of one row's result off by 1e-3 (the forward tolerance is 1e-4)
    onResults: (row, values) => {
      seen.push(row);
      if (/^groupNorm 128 .* forward$/.test(row)) values[0][5] += 1e-3;
      if (/^gemm NCHW .* backward \(weight\)$/.test(row)) values[0][0] *= 1.01;
    },
  });
  const by = (re: RegExp) => rows.filter((r) => re.test(`${r.name} ${r.pass}`));
  assert.equal(seen.length, rows.length, "every row's results went through the validation");
  const gn = by(/^groupNorm 128 .* forward$/), gemm = by(/^gemm NCHW .* backward \(weight\)$/);
  assert.equal(gn.length, 1);
  assert.equal(gemm.length, 1);
  for (const r of [...gn, ...gemm]) {
    assert.equal(r.validation.status, "failed");
    assert.ok(r.validation.worst > 1);
    assert.match(r.validation.detail, /element \d+ is .*, expected/);
    assert.equal(r.timing, null, "a failed row is not timed");
    assert.ok(!isTimed(r));
    assert.ok(
      errors.some((e) => e.startsWith(`${r.name} ${r.pass}: validation against ${r.op}'s reference failed`)),
    );
  }
  assert.equal(errors.length, 2, errors.join("\n"));
  // the other rows (the norm's backward, the conv, the other GEMMs, AdamW) passed and were timed
  const others = rows.filter((r) => !gn.includes(r) && !gemm.includes(r));
  const count = (op: string) => others.filter((r) => r.op === op).length;
  assert.deepEqual([count("groupNorm"), count("conv2d"), count("matmul"), count("adamW")], [1, 3, 5, 1]);
  for (const r of others) {
    assert.equal(r.validation.status, "passed", `${r.name} ${r.pass}: ${r.validation.detail}`);
    assert.ok(isTimed(r));
  }
  // and the report says so: the table row and the failure under it
  const text = formatReport(
    {
      date: "",
      adapter: { name: "test", fallback: false, timestampQuery: false },
      deno: "",
      settings: { batch: 1, runs: 1 },
      ceilings: { fmaGflops: 1, copyGBs: 1, ridge: 1, detail: [] },
      kernels: rows,
      steps: [],
      tfjs: null,
      torch: null,
      targets: [],
      notes: [],
      errors,
      seconds: 0,
    } as unknown as Parameters<typeof formatReport>[0],
  );
  assert.match(text, /groupNorm 128 \S+\s+groupNorm\s+forward\s+-\s+\S+\s+FAILED/);
  assert.match(text, /FAILED groupNorm 128 .* forward: y: element 5 is/);
  assert.match(text, /ok at batch 1/);
});

Deno.test("PyTorch peer: scripts/torch_bench.py builds the narrow final with our parameter count", async () => {
  const c = torchCase({ name: "final narrow", stage: "final", batch: 64, model: NARROW }, 1, 1);
  assert.equal(c.expectParams, 305690);
  assert.deepEqual([c.widths, c.depths, c.stemFeatures, c.softmaxHead], [
    NARROW.widths,
    NARROW.depths,
    16,
    false,
  ]);
  // a wrong expectation must stop the case (the script asserts the models are the same)
  const bad = { ...c, name: "wrong", expectParams: c.expectParams + 1 };
  const out = await runTorchScript({ measure: false, cases: [c, bad] });
  if ("unavailable" in out) {
    console.log(`skipped, PyTorch is not installed here: ${out.unavailable}`);
    return;
  }
  assert.equal(out.results[0].params, 305690);
  assert.equal(out.results[0].error, null);
  assert.equal(out.results[0].medianMs, null, "measure: false times nothing");
  assert.match(out.results[1].error!, /305690 parameters, ours 305691/);
  assert.equal(out.threads >= 1, true);
});

Deno.test("PyTorch peer: the round schedule alternates the sides, case by case", () => {
  const sched = roundSchedule([true, false, true], 3);
  const text = sched.map((x) => `${x.caseIndex}${x.side === "ours" ? "o" : "t"}${x.round}`).join(" ");
  // per case: ours, theirs, ours, theirs, …; a case without our side has PyTorch's rounds only
  assert.equal(text, "0o0 0t0 0o1 0t1 0o2 0t2 1t0 1t1 1t2 2o0 2t0 2o1 2t1 2o2 2t2");
  assert.deepEqual(roundSchedule([true], 1).map((x) => x.side), ["ours", "torch"]);
  assert.deepEqual(roundSchedule([], 5), []);
});

Deno.test("PyTorch peer: min, median, spread and the min-to-min ratio of given samples", () => {
  assert.deepEqual(sampleStats([30, 10, 20, 50]), {
    n: 4,
    minMs: 10,
    medianMs: 25,
    maxMs: 50,
    spreadPct: 160,
  });
  assert.deepEqual(sampleStats([7]), { n: 1, minMs: 7, medianMs: 7, maxMs: 7, spreadPct: 0 });
  assert.equal(sampleStats([]), null);
  // ours 600..900 (min 600, median 700), theirs 200..400 (min 200, median 300)
  const c = compareSamples([700, 900, 600], [300, 200, 400, 250, 350]);
  assert.equal(c.ours!.minMs, 600);
  assert.equal(c.torch!.medianMs, 300);
  assert.equal(c.ratio, 3, "min to min");
  assert.equal(c.medianRatio, 700 / 300);
  assert.equal(compareSamples([], [1, 2]).ratio, null, "no ratio without our side");
  assert.equal(compareSamples([1], []).medianRatio, null);
});

Deno.test("PyTorch peer: the report's section, ratio and target from given rounds", () => {
  const cases = [
    torchCase({ name: "final narrow", stage: "final", batch: 64, model: NARROW }, 2, 2),
    torchCase({ name: "final", stage: "final", batch: 64 }, 2, 2),
  ];
  const result = (name: string, params: number, samplesMs: number[]) => ({
    name,
    stage: "final",
    batch: 64,
    params,
    warmup: 2,
    runs: samplesMs.length,
    samplesMs,
    medianMs: null,
    minMs: null,
    maxMs: null,
    error: null,
  });
  // two rounds of two steps a side (our samples per case; the full model's PyTorch count differs)
  const rows = torchRows(
    cases,
    [result("final narrow", 305690, [200, 260, 210, 300]), result("final", 8531977, [2000, 2100])],
    [[620, 600, 700, 640], [5000, 5100]],
    2,
  );
  assert.equal(rows[0].ratio, 3, "600 / 200, min to min");
  assert.equal(rows[0].medianRatio, 630 / 235);
  assert.deepEqual([rows[0].oursMinMs, rows[0].oursMs, rows[0].torchMinMs, rows[0].torchMs], [
    600,
    630,
    200,
    235,
  ]);
  assert.deepEqual([rows[0].oursRuns, rows[0].runs, rows[0].rounds], [4, 4, 2]);
  assert.equal(rows[0].torchSpreadPct, (100 / 235) * 100);
  assert.equal(rows[1].ratio, null);
  assert.match(rows[1].error!, /parameter counts differ: PyTorch 8531977, ours 8531978/);
  const round = (side: "ours" | "torch", r: number, samplesMs: number[], startS: number) => ({
    name: "final narrow",
    batch: 64,
    round: r,
    side,
    pid: 100 + startS,
    startS,
    wallMs: 900,
    samplesMs,
    cpuMs: 1,
    nivcsw: 0,
    parentCpuMs: 3,
    load1: 0.1 + startS / 100,
    error: null,
  });
  const section: TorchSection = {
    info: { version: "1.13.0", python: "python3", threads: 2, mkldnn: true },
    rows,
    rounds: [
      round("ours", 0, [620, 600], 0),
      round("torch", 0, [200, 260], 1),
      round("ours", 1, [700, 640], 2),
      round("torch", 1, [210, 300], 3),
    ],
    roundsPerCase: 2,
    warmup: 2,
    runs: 2,
    parentHoldsDevice: false,
    parentRssMiB: 40,
    skipped: null,
    error: null,
  };
  const text = formatTorchSection(section).join("\n");
  assert.match(text, /## PyTorch side by side/);
  assert.match(text, /PyTorch 1\.13\.0 \(python3\), 2 threads/);
  assert.match(
    text,
    /2 rounds of ours, PyTorch, ours, PyTorch…, each a fresh process \(2 warm-up steps, then 2 timed\)/,
  );
  assert.match(text, /holding no WebGPU device, 40 MiB resident\) only waited: ≤ 3 ms of CPU/);
  assert.match(
    text,
    /final narrow\s+64\s+305690\s+305690\s+600\s+630\s+16%\s+200\s+235\s+43%\s+×3\.00\s+×2\.68/,
  );
  assert.match(
    text,
    /final narrow batch 64, min of each round: ours 600 640; PyTorch 200 210; load average 0\.10–0\.13/,
  );
  assert.match(text, /ERROR: parameter counts differ/);
  const targets = evaluateTargets({ fmaGflops: 1 } as Ceilings, [], [], [], section);
  const narrow = targets.find((t) => t.name === "final narrow step (batch 64): ours / PyTorch CPU")!;
  assert.deepEqual([narrow.value, narrow.goal, narrow.met], [3, "≤ 3×", true]);
  assert.match(narrow.detail, /600\.0 ms vs 200\.0 ms min to min/);
  const full = targets.find((t) => t.name === "final step (batch 64): ours / PyTorch CPU")!;
  assert.equal(full.met, null);
  const skipped: TorchSection = {
    ...section,
    info: null,
    rows: [],
    rounds: [],
    skipped: "no Python with PyTorch",
  };
  assert.match(formatTorchSection(skipped).join("\n"), /PyTorch skipped: no Python with PyTorch/);
  const none = evaluateTargets({ fmaGflops: 1 } as Ceilings, [], [], [], skipped);
  assert.equal(none.find((t) => /PyTorch CPU/.test(t.name))!.detail, "no Python with PyTorch");
  // the report prints this section
  assert.match(
    formatReport(
      {
        date: "",
        adapter: { name: "test", fallback: false, timestampQuery: false },
        deno: "",
        settings: { batch: 1, runs: 1 },
        ceilings: { fmaGflops: 1, copyGBs: 1, ridge: 1, detail: [] },
        kernels: [],
        steps: [],
        tfjs: null,
        torch: section,
        targets,
        notes: [],
        errors: [],
        seconds: 0,
      } as unknown as Parameters<typeof formatReport>[0],
    ),
    /ratio min\/min/,
  );
});

Deno.test("PyTorch peer: rounds alternate child processes, one alive at a time", async () => {
  // the smallest real comparison: narrow final at batch 2, one timed step a child, two rounds a side
  const log: string[] = [];
  const t = await compareTorch([{ name: "final narrow", stage: "final", batch: 2, model: NARROW }], {
    runs: 1,
    rounds: 2,
    ours: true,
    log: (l) => log.push(l),
  });
  if (t.skipped) {
    console.log(`skipped, PyTorch is not installed here: ${t.skipped}`);
    return;
  }
  assert.equal(t.error, null);
  console.log(formatTorchSection(t).join("\n"));
  assert.deepEqual(t.rounds.map((r) => `${r.side}${r.round}`), ["ours0", "torch0", "ours1", "torch1"]);
  assert.equal(new Set(t.rounds.map((r) => r.pid)).size, 4, "a fresh process every round");
  for (const [i, r] of t.rounds.entries()) {
    assert.equal(r.error, null, `${r.side} round ${r.round}: ${r.error}`);
    assert.equal(r.samplesMs.length, 1);
    finitePositive(r.samplesMs[0], `${r.side} round ${r.round} ms`);
    assert.ok(r.parentCpuMs >= 0);
    // the next child starts after this one has exited
    if (i + 1 < t.rounds.length) assert.ok(r.startS * 1e3 + r.wallMs <= t.rounds[i + 1].startS * 1e3 + 1);
  }
  assert.equal(t.parentHoldsDevice, true, "this test process has its WebGPU device (setup())");
  assert.deepEqual([t.roundsPerCase, t.warmup, t.runs], [2, 2, 1]);
  const row = t.rows[0];
  assert.equal(row.error, null);
  assert.deepEqual([row.torchParams, row.oursRuns, row.runs], [305690, 2, 2]);
  finitePositive(row.ratio!, "ours min / PyTorch min");
  assert.equal(row.ratio, row.oursMinMs! / row.torchMinMs!);
  assert.ok(
    log.some((l) => /round 2\/2 final narrow batch 2: PyTorch alone \(pid \d+/.test(l)),
    log.join("\n"),
  );
  // the JSON carries the same figures
  const json = JSON.parse(JSON.stringify(t));
  assert.equal(json.rows[0].ratio, row.ratio);
  assert.equal(json.rounds.length, 4);
});
