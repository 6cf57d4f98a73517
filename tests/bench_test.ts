// The benchmark harness on tiny shapes: it runs, validates every kernel row against its op's CPU reference
// before timing it (and a wrong result fails the row), reports numbers, and its report has the structure
// `--json` promises. No timing is asserted (speed is what `deno task bench` reports, not what tests check).

import assert from "node:assert/strict";
import { parseBenchArgs } from "../bench/main.ts";
import { evaluateTargets, formatReport, formatTorch, runBench } from "../bench/run.ts";
import { benchKernels, isTimed } from "../bench/kernels.ts";
import type { Ceilings } from "../bench/ceilings.ts";
import { NARROW, type StepRow } from "../bench/steps.ts";
import { runTorchScript, torchCase, torchRows } from "../bench/torch.ts";
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
    sections: ["kernels", "steps", "torch"],
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
  // PyTorch ran the same case in rounds interleaved with ours (or was skipped, saying why, without
  // failing the run); ours/theirs come from those rounds
  const t = report.torch!;
  if (t.skipped) console.log(`PyTorch skipped: ${t.skipped}`);
  else {
    assert.equal(t.rows.length, 1);
    assert.equal(t.rows[0].torchParams, 305690);
    finitePositive(t.rows[0].oursMs!, "our interleaved ms/step");
    assert.ok(t.rows[0].runs >= 3, `PyTorch samples over 3 rounds, got ${t.rows[0].runs}`);
    finitePositive(t.rows[0].ratio!, "ours / PyTorch");
  }
  assert.ok(report.targets.some((x) => /final narrow step \(batch 2\): ours \/ PyTorch CPU/.test(x.name)));
  assert.ok(report.targets.length >= 5);
  assert.deepEqual(report.errors, []);
  const json = JSON.parse(JSON.stringify(report));
  assert.equal(json.kernels.length, report.kernels.length);
  assert.ok(json.kernels.every((k: { validation: { status: string } }) => k.validation.status === "passed"));
  const text = formatReport(report);
  for (
    const h of ["## Ceilings", "## Kernels", "## Training steps", "## PyTorch side by side", "## Targets"]
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

Deno.test("PyTorch peer: the report's section, ratio and target from a given result", () => {
  const cases = [
    torchCase({ name: "final narrow", stage: "final", batch: 64, model: NARROW }, 1, 2),
    torchCase({ name: "final", stage: "final", batch: 64 }, 1, 2),
  ];
  const result = (name: string, params: number, medianMs: number) => ({
    name,
    stage: "final",
    batch: 64,
    params,
    warmup: 1,
    runs: 2,
    samplesMs: [medianMs - 10, medianMs + 10],
    medianMs,
    minMs: medianMs - 10,
    maxMs: medianMs + 10,
    error: null,
  });
  // our rows: only what the join reads
  const ours = [{
    name: "final narrow",
    batch: 64,
    stage: "final",
    timing: { medianMs: 600 },
    overheadPct: null,
  }] as StepRow[];
  const rows = torchRows(cases, [result("final narrow", 305690, 200), result("final", 8531977, 2000)], ours);
  assert.equal(rows[0].ratio, 3);
  assert.equal(rows[1].ratio, null);
  assert.match(rows[1].error!, /parameter counts differ: PyTorch 8531977, ours 8531978/);
  const section = {
    info: { version: "1.13.0", python: "python3", threads: 2, mkldnn: true },
    rows,
    skipped: null,
    error: null,
  };
  const text = formatTorch(section).join("\n");
  assert.match(text, /## PyTorch side by side/);
  assert.match(text, /PyTorch 1\.13\.0 \(python3\), 2 threads/);
  assert.match(text, /final narrow\s+64\s+305690\s+305690\s+600\s+200\s+190–210\s+×3\.00/);
  assert.match(text, /ERROR: parameter counts differ/);
  const targets = evaluateTargets({ fmaGflops: 1 } as Ceilings, [], ours, [], section);
  const narrow = targets.find((t) => t.name === "final narrow step (batch 64): ours / PyTorch CPU")!;
  assert.deepEqual([narrow.value, narrow.goal, narrow.met], [3, "≤ 3×", true]);
  const full = targets.find((t) => t.name === "final step (batch 64): ours / PyTorch CPU")!;
  assert.equal(full.met, null);
  const skipped = { info: null, rows: [], skipped: "no Python with PyTorch", error: null };
  assert.match(formatTorch(skipped).join("\n"), /PyTorch skipped: no Python with PyTorch/);
  const none = evaluateTargets({ fmaGflops: 1 } as Ceilings, [], ours, [], skipped);
  assert.equal(none.find((t) => /final narrow.*PyTorch/.test(t.name))!.detail, "no Python with PyTorch");
});
