// The benchmark harness on tiny shapes: it runs, reports numbers, and its report has the structure
// `--json` promises. No timing is asserted (speed is what `deno task bench` reports, not what tests check).

import assert from "node:assert/strict";
import { parseBenchArgs } from "../bench/main.ts";
import { formatReport, runBench } from "../bench/run.ts";
import { NARROW } from "../bench/steps.ts";
import { measure, PassProfiler } from "../bench/timing.ts";
import { tensor } from "../mod.ts";
import { relu } from "../autograd/ops/elementwise.ts";
import { scope } from "../autograd/tensor.ts";
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
  assert.throws(() => parseBenchArgs(["--compare", "torch"]), /only "tfjs"/);
  assert.throws(() => parseBenchArgs(["--stages", "resnet"]), /unknown stage/);
  assert.throws(() => parseBenchArgs(["--batch", "0"]), /positive integer/);
});

Deno.test("bench harness on a tiny shape: finite, positive numbers in the documented structure", async () => {
  const report = await runBench({
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
  for (const k of report.kernels) {
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
  assert.ok(report.targets.length >= 5);
  assert.deepEqual(report.errors, []);
  const json = JSON.parse(JSON.stringify(report));
  assert.equal(json.kernels.length, report.kernels.length);
  const text = formatReport(report);
  for (const h of ["## Ceilings", "## Kernels", "## Training steps", "## Targets"]) {
    assert.ok(text.includes(h), h);
  }
  console.log(text);
});

Deno.test("bench timing: wall-clock fallback, GPU timestamps and the per-pass profiler agree on what they time", async () => {
  const x = tensor(new Float32Array(1 << 16).fill(-1));
  const op = () => scope(() => void relu(x));
  const wall = await measure(op, { method: "wall", runs: 2, minSampleMs: 1 });
  assert.equal(wall.method, "wall");
  finitePositive(wall.medianMs, "wall ms");
  assert.ok(wall.inner >= 1 && wall.runs === 2);
  if (PassProfiler.available()) {
    const ts = await measure(op, { method: "gpu-timestamp", runs: 2, minSampleMs: 1 });
    finitePositive(ts.medianMs, "timestamp ms");
    const prof = new PassProfiler();
    prof.start();
    op();
    op();
    const p = await prof.stop();
    assert.equal(p.passes, 2);
    assert.deepEqual(p.byKernel.map((k) => [k.label, k.calls]), [["relu", 2]]);
    finitePositive(p.totalMs, "profiled ms");
  }
  x.dispose();
});
