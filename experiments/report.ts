// `deno task report`: reads every run under the results folder and writes the seven-step table
// (mean ± std of each stage's reported accuracy next to the notebook's numbers) as Markdown, plus
// SVG pictures drawn with Vega-Lite: accuracy curves per stage and the ablation bar chart.

import { parseArgs } from "node:util";
import { parse } from "csv-parse/sync";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import { PUBLISHED, STAGES } from "./config.ts";
import { type EpochRow, type RunSummary, writeAtomic } from "./results.ts";

const HELP = `deno task report [--results DIR] [--out DIR]

Reads results/<stage>/run*.json and run*.csv (written by \`deno task train\`) and writes
  <out>/report.md           the seven-step table: mean ± std over runs vs the published accuracy
  <out>/ablation.svg        bar chart of the reported accuracies
  <out>/curves-<stage>.svg  train/validation/test accuracy per epoch for each stage
  --results DIR   where the runs are (default results)
  --out DIR       where to write (default: the results folder)
`;

export interface StageRuns {
  stage: string;
  runs: { summary: RunSummary; rows: EpochRow[] }[];
}

export async function readResults(dir: string): Promise<StageRuns[]> {
  const out: StageRuns[] = [];
  for (const stage of STAGES) {
    const sdir = `${dir}/${stage}`;
    const runs: StageRuns["runs"] = [];
    try {
      for await (const e of Deno.readDir(sdir)) {
        const m = e.name.match(/^run(\d+)\.json$/);
        if (!m) continue;
        const summary = JSON.parse(await Deno.readTextFile(`${sdir}/${e.name}`)) as RunSummary;
        const csv = await Deno.readTextFile(`${sdir}/run${m[1]}.csv`).catch(() => "");
        const rows = parse(csv, { columns: true, cast: true }) as EpochRow[];
        runs.push({ summary, rows });
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (runs.length) out.push({ stage, runs: runs.sort((a, b) => a.summary.run - b.summary.run) });
  }
  return out;
}

export function meanStd(xs: number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const std = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean, std };
}

/** Runs still training (or stopped) in a partial study; summaries without the flag count as complete. */
function unfinished(r: StageRuns): StageRuns["runs"] {
  return r.runs.filter((x) => x.summary.complete === false);
}

/** What a partial study lacks: unfinished runs and stages without any run yet; "" when complete. */
export function partialNote(results: StageRuns[]): string {
  const open = results.flatMap((r) =>
    unfinished(r).map((x) =>
      `\`${r.stage}\` run ${x.summary.run} (${x.summary.epochsCompleted} of ${
        x.summary.config?.epochs ?? "?"
      } epochs)`
    )
  );
  const missing = STAGES.filter((s) => !results.some((r) => r.stage === s));
  const parts = [
    ...(open.length ? [`unfinished runs, counted with the epochs they have: ${open.join(", ")}`] : []),
    ...(missing.length ? [`no runs yet: ${missing.map((s) => `\`${s}\``).join(", ")}`] : []),
  ];
  return parts.length ? `Partial study: ${parts.join("; ")}.` : "";
}

export function markdownTable(results: StageRuns[]): string {
  const lines = [
    "| step | stage | runs | epochs | reported accuracy (mean ± std) | published | difference | rule |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const r of results) {
    const acc = r.runs.map((x) => x.summary.reported.accuracy);
    const { mean, std } = meanStd(acc);
    const pub = PUBLISHED[r.stage as keyof typeof PUBLISHED];
    const epochs = [...new Set(r.runs.map((x) => x.summary.epochsCompleted))].join("/");
    const open = unfinished(r).length;
    lines.push(
      `| ${STAGES.indexOf(r.stage as typeof STAGES[number]) + 1} | \`${r.stage}\` | ${r.runs.length}${
        open ? ` (${open} unfinished)` : ""
      } | ${epochs} | ${mean.toFixed(4)} ± ${std.toFixed(4)} | ${pub.toFixed(4)} | ${
        (mean - pub >= 0 ? "+" : "") + (mean - pub).toFixed(4)
      } | ${r.runs[0].summary.reported.rule} |`,
    );
  }
  return lines.join("\n");
}

async function svg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  const out = await view.toSVG();
  view.finalize();
  return out;
}

export function curveSpec(r: StageRuns): TopLevelSpec {
  const values = r.runs.flatMap((x) =>
    x.rows.flatMap((row) =>
      (["Train", "Validation", "Test"] as const).map((split) => ({
        epoch: row.epoch,
        accuracy: row[split],
        split,
        run: `run ${x.summary.run}`,
      }))
    )
  );
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: `${r.stage}: accuracy per epoch`,
    width: 480,
    height: 280,
    data: { values },
    mark: { type: "line", point: values.length < 60 },
    encoding: {
      x: { field: "epoch", type: "quantitative", axis: { format: "d", tickMinStep: 1 } },
      y: { field: "accuracy", type: "quantitative", scale: { zero: false } },
      color: { field: "split", type: "nominal" },
      strokeDash: { field: "run", type: "nominal" },
    },
  };
}

export function ablationSpec(results: StageRuns[]): TopLevelSpec {
  const values = results.flatMap((r) => {
    const { mean } = meanStd(r.runs.map((x) => x.summary.reported.accuracy));
    return [
      { stage: r.stage, source: "this run", accuracy: mean },
      { stage: r.stage, source: "published", accuracy: PUBLISHED[r.stage as keyof typeof PUBLISHED] },
    ];
  });
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: "ResNet → ConvNeXt: reported test accuracy per step",
    width: 480,
    height: 280,
    data: { values },
    mark: "bar",
    encoding: {
      x: { field: "stage", type: "nominal", sort: [...STAGES], axis: { labelAngle: 0 } },
      xOffset: { field: "source" },
      y: { field: "accuracy", type: "quantitative", scale: { domain: [0, 1] } },
      color: { field: "source", type: "nominal" },
    },
  };
}

export async function writeReport(resultsDir: string, outDir: string): Promise<string[]> {
  const results = await readResults(resultsDir);
  if (!results.length) {
    throw new Error(`No runs found under ${resultsDir}/<stage>/ — train first: deno task train --quick`);
  }
  await Deno.mkdir(outDir, { recursive: true });
  const written: string[] = [];
  const md = [
    "# ResNet → ConvNeXt in seven steps: results",
    "",
    markdownTable(results),
    "",
    "Published: the notebook's mean of 3 runs of the best test accuracy over 100 epochs.",
    "",
    ...(partialNote(results) ? [partialNote(results), ""] : []),
    "![ablation](ablation.svg)",
    "",
    ...results.map((r) => `![${r.stage}](curves-${r.stage}.svg)`),
    "",
  ].join("\n");
  await writeAtomic(`${outDir}/report.md`, md);
  written.push(`${outDir}/report.md`);
  await writeAtomic(`${outDir}/ablation.svg`, await svg(ablationSpec(results)));
  written.push(`${outDir}/ablation.svg`);
  for (const r of results) {
    await writeAtomic(`${outDir}/curves-${r.stage}.svg`, await svg(curveSpec(r)));
    written.push(`${outDir}/curves-${r.stage}.svg`);
  }
  return written;
}

if (import.meta.main) {
  try {
    const { values } = parseArgs({
      args: Deno.args,
      options: {
        results: { type: "string" },
        out: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      console.log(HELP);
    } else {
      const dir = values.results ?? "results";
      const files = await writeReport(dir, values.out ?? dir);
      console.log(await Deno.readTextFile(files[0]));
      console.log(`wrote ${files.join(", ")}`);
    }
  } catch (e) {
    console.error(`report: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
