import assert from "node:assert/strict";
import { markdownTable, meanStd, readResults, writeReport } from "../experiments/report.ts";
import { csvText, type EpochRow, reportedAccuracy } from "../experiments/results.ts";

function rows(accs: number[][]): EpochRow[] {
  return accs.map(([t, v, te], i) => ({
    epoch: i + 1,
    loss: 2 - i * 0.1,
    Train: t,
    Validation: v,
    Test: te,
    lr: 0.004,
    seconds: 10,
  }));
}

Deno.test("reported accuracy: best test (notebook) or test at the best validation epoch (clean)", () => {
  const r = rows([[0.5, 0.6, 0.55], [0.6, 0.7, 0.52], [0.7, 0.65, 0.6]]);
  assert.deepEqual(reportedAccuracy(r, "notebook"), { accuracy: 0.6, epoch: 3, rule: "best test accuracy" });
  assert.equal(reportedAccuracy(r, "clean").accuracy, 0.52);
  assert.equal(reportedAccuracy(r, "clean").epoch, 2);
  const { mean, std } = meanStd([0.8, 0.9]);
  assert.ok(Math.abs(mean - 0.85) < 1e-12 && Math.abs(std - Math.sqrt(0.005)) < 1e-12);
});

Deno.test("report: the seven-step table and SVG pictures from a results folder", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const write = async (stage: string, run: number, accs: number[][]) => {
      await Deno.mkdir(`${dir}/${stage}`, { recursive: true });
      const r = rows(accs);
      await Deno.writeTextFile(`${dir}/${stage}/run${run}.csv`, csvText(r));
      const summary = { stage, run, epochsCompleted: r.length, reported: reportedAccuracy(r, "notebook") };
      await Deno.writeTextFile(`${dir}/${stage}/run${run}.json`, JSON.stringify(summary));
    };
    await write("base", 0, [[0.5, 0.5, 0.80], [0.6, 0.6, 0.82]]);
    await write("base", 1, [[0.5, 0.5, 0.84], [0.6, 0.6, 0.83]]);
    await write("final", 0, [[0.7, 0.7, 0.9]]);
    const results = await readResults(dir);
    assert.deepEqual(results.map((r) => [r.stage, r.runs.length]), [["base", 2], ["final", 1]]);
    assert.equal(results[0].runs[1].rows[1].Test, 0.83);
    const table = markdownTable(results);
    assert.match(table, /\| 1 \| `base` \| 2 \| 2 \| 0\.8300 ± 0\.0141 \| 0\.8348 \| -0\.0048 \|/);
    assert.match(table, /\| 7 \| `final` \| 1 \| 1 \| 0\.9000 ± 0\.0000 \| 0\.9080 \|/);
    const files = await writeReport(dir, dir);
    assert.deepEqual(files.map((f) => f.slice(dir.length + 1)), [
      "report.md",
      "ablation.svg",
      "curves-base.svg",
      "curves-final.svg",
    ]);
    for (const f of files.slice(1)) {
      const svg = await Deno.readTextFile(f);
      assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
      assert.match(svg, /<path/);
    }
    assert.match(await Deno.readTextFile(`${dir}/ablation.svg`), /stage_ratio|base/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("report: a folder without runs gives a clear error", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(writeReport(dir, dir), /No runs found under .* train first/);
  await Deno.remove(dir, { recursive: true });
});
