// PyTorch CPU as a bench peer (`deno task bench --compare torch`): the same training-step cases as
// bench/steps.ts, run by scripts/torch_bench.py on the notebook's own PyTorch models
// (scripts/golden/models.py) in a child process, never beside our steps. The parameter count of
// every case must equal ours, or the case is not timed. Interleaved: for each case, a few rounds of
// our steps then PyTorch's, so a machine whose speed drifts (a shared host: 1.5× within minutes,
// seen here) slows both sides alike; the ratio is the median of our steps over the median of theirs.
//
// The interpreter: $CONVNEXT_TORCH_PYTHON if set, else Debian's /usr/bin/python3 (python3-torch), else
// python3 on PATH. Without one that can import torch the section is skipped with the reason.

import { fileURLToPath } from "node:url";
import { buildModel, resolveConfig } from "../models/zoo.ts";
import { onMeta } from "../nn/module.ts";
import type { StepCase, StepRow } from "./steps.ts";

export interface TorchInfo {
  version: string;
  python: string;
  threads: number;
  mkldnn: boolean;
}

export interface TorchRow {
  name: string;
  stage: string;
  batch: number;
  oursParams: number;
  torchParams: number | null;
  warmup: number;
  runs: number;
  /** PyTorch's wall time per step: median, min, max over `runs` steps after `warmup`, ms. */
  torchMs: number | null;
  torchMinMs: number | null;
  torchMaxMs: number | null;
  /** Our median ms/step of the same case in this run (null when our steps were not run). */
  oursMs: number | null;
  /** oursMs / torchMs: how many times slower ours is (the goal: ≤ 3). */
  ratio: number | null;
  error: string | null;
}

export interface TorchSection {
  info: TorchInfo | null;
  rows: TorchRow[];
  /** Why PyTorch did not run (absent, no --allow-run): not a bench failure. */
  skipped: string | null;
  /** The script failed as a whole. */
  error: string | null;
}

/** The result of one case as scripts/torch_bench.py prints it. */
export interface TorchResult {
  name: string;
  stage: string;
  batch: number;
  params: number | null;
  warmup: number;
  runs: number;
  samplesMs: number[];
  medianMs: number | null;
  minMs: number | null;
  maxMs: number | null;
  error: string | null;
}

export interface TorchOutput {
  torch: string;
  python: string;
  threads: number;
  mkldnn: boolean;
  results: TorchResult[];
}

export const TORCH_SCRIPT = fileURLToPath(new URL("../scripts/torch_bench.py", import.meta.url));

/** Interpreters to try, in order. */
export function torchPythons(): string[] {
  const env = Deno.env.get("CONVNEXT_TORCH_PYTHON");
  return env ? [env] : ["/usr/bin/python3", "python3"];
}

/** One case of the script's input: our resolved configuration and parameter count. */
export function torchCase(c: StepCase, warmup: number, runs: number) {
  const cfg = resolveConfig(c.stage, c.model);
  const oursParams = onMeta(() => buildModel(c.stage, c.model)).numParameters();
  return {
    name: c.name,
    stage: cfg.stage,
    batch: c.batch,
    widths: cfg.widths,
    depths: cfg.depths,
    stemFeatures: cfg.stemFeatures,
    softmaxHead: cfg.softmaxHead,
    expectParams: oursParams,
    warmup,
    runs,
  };
}

async function forwardLines(stream: ReadableStream<Uint8Array>, log: (line: string) => void) {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const l of lines) if (l.trim()) log(l);
  }
  if (rest.trim()) log(rest);
}

/**
 * Runs scripts/torch_bench.py on `request` with the first interpreter that has torch. Returns its
 * output, or `{ unavailable }` saying why none could run it; throws when the script itself fails.
 */
export async function runTorchScript(
  request: { threads?: number; measure?: boolean; cases: ReturnType<typeof torchCase>[] },
  opts: { pythons?: string[]; log?: (line: string) => void } = {},
): Promise<TorchOutput | { unavailable: string }> {
  const why: string[] = [];
  for (const py of opts.pythons ?? torchPythons()) {
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(py, {
        args: [TORCH_SCRIPT, "-"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
        return { unavailable: `running ${py} needs --allow-run (${e.message})` };
      }
      why.push(`${py}: ${e instanceof Deno.errors.NotFound ? "not found" : e}`);
      continue;
    }
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(JSON.stringify(request)));
    await writer.close();
    const errLines: string[] = [];
    const [out] = await Promise.all([
      new Response(child.stdout).text(),
      forwardLines(child.stderr, (l) => {
        errLines.push(l);
        opts.log?.(l);
      }),
    ]);
    const status = await child.status;
    let parsed: Record<string, unknown> | null = null;
    try {
      parsed = JSON.parse(out.trim().split("\n").pop() ?? "");
    } catch { /* reported below */ }
    if (status.code === 3 && parsed && typeof parsed.unavailable === "string") {
      why.push(parsed.unavailable);
      continue;
    }
    if (status.code !== 0 || !parsed || !Array.isArray(parsed.results)) {
      const detail = (parsed?.error as string | undefined) ?? (errLines.slice(-5).join(" | ") || out.trim());
      throw new Error(`${py} ${TORCH_SCRIPT} exited with ${status.code}: ${detail}`);
    }
    return parsed as unknown as TorchOutput;
  }
  const hint = Deno.env.get("CONVNEXT_TORCH_PYTHON")
    ? "check $CONVNEXT_TORCH_PYTHON"
    : "install python3-torch or set CONVNEXT_TORCH_PYTHON";
  return { unavailable: `no Python with PyTorch (${why.join("; ")}); ${hint}` };
}

/** Joins PyTorch's results with our step rows of the same name and batch. */
export function torchRows(
  cases: ReturnType<typeof torchCase>[],
  results: TorchResult[],
  ours: StepRow[],
): TorchRow[] {
  return cases.map((c, i) => {
    const r = results[i];
    const mine = ours.find((s) => s.name === c.name && s.batch === c.batch);
    const torchMs = r?.error ? null : r?.medianMs ?? null;
    const oursMs = mine?.timing.medianMs ?? null;
    const torchParams = r?.params ?? null;
    let error = r ? r.error : "no result from the PyTorch script";
    if (!error && torchParams !== c.expectParams) {
      error = `parameter counts differ: PyTorch ${torchParams}, ours ${c.expectParams}`;
    }
    return {
      name: c.name,
      stage: c.stage,
      batch: c.batch,
      oursParams: c.expectParams,
      torchParams,
      warmup: c.warmup,
      runs: r?.runs ?? c.runs,
      torchMs: error ? null : torchMs,
      torchMinMs: error ? null : r?.minMs ?? null,
      torchMaxMs: error ? null : r?.maxMs ?? null,
      oursMs,
      ratio: !error && oursMs !== null && torchMs ? oursMs / torchMs : null,
      error,
    };
  });
}

/** Our side of an interleaved round: the wall ms of `runs` steps of a case (after `warmup`). */
export type OurSteps = (c: StepCase, warmup: number, runs: number) => Promise<number[]>;

/**
 * The PyTorch section. With `timeOurs` (our steps ran), each case takes `rounds` rounds of our steps
 * then PyTorch's (a child process per round), and the row's ours/theirs come from those rounds;
 * without it every case is timed once, in one child process, beside nothing of ours.
 */
export async function compareTorch(
  cases: StepCase[],
  opts: {
    warmup: number;
    runs: number;
    ours: StepRow[];
    timeOurs?: OurSteps;
    rounds?: number;
    log?: (line: string) => void;
    pythons?: string[];
  },
): Promise<TorchSection> {
  const req = cases.map((c) => torchCase(c, opts.warmup, opts.runs));
  const threads = navigator.hardwareConcurrency || 1;
  const run = (cs: typeof req) =>
    runTorchScript({ threads, cases: cs }, { pythons: opts.pythons, log: opts.log });
  try {
    const interleave = opts.timeOurs && opts.ours.length > 0;
    if (!interleave) {
      const out = await run(req);
      if ("unavailable" in out) return { info: null, rows: [], skipped: out.unavailable, error: null };
      return { info: infoOf(out), rows: torchRows(req, out.results, opts.ours), skipped: null, error: null };
    }
    const rounds = Math.max(1, opts.rounds ?? 3);
    let info: TorchInfo | null = null;
    const results: TorchResult[] = [];
    const ours: StepRow[] = [];
    for (const [i, c] of cases.entries()) {
      const mine = opts.ours.find((s) => s.name === c.name && s.batch === c.batch);
      const samples: number[] = [], theirs: TorchResult[] = [];
      for (let r = 0; r < rounds; r++) {
        if (mine) samples.push(...await opts.timeOurs!(c, r === 0 ? opts.warmup : 0, opts.runs));
        const out = await run([req[i]]);
        if ("unavailable" in out) return { info: null, rows: [], skipped: out.unavailable, error: null };
        info = infoOf(out);
        theirs.push(out.results[0]);
        if (out.results[0]?.error) break;
      }
      results.push(mergeResults(theirs));
      if (mine) ours.push({ ...mine, timing: { ...mine.timing, ...summary(samples) } });
      opts.log?.(
        `  ${c.name}: ${rounds} rounds interleaved, ours ${summary(samples).medianMs.toFixed(1)} ms/step`,
      );
    }
    return { info, rows: torchRows(req, results, ours), skipped: null, error: null };
  } catch (e) {
    return { info: null, rows: [], skipped: null, error: e instanceof Error ? e.message : String(e) };
  }
}

function infoOf(out: TorchOutput): TorchInfo {
  return { version: out.torch, python: out.python, threads: out.threads, mkldnn: out.mkldnn };
}

function summary(xs: number[]): { medianMs: number; minMs: number; maxMs: number; runs: number } {
  const s = [...xs].sort((a, b) => a - b);
  const med = s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return { medianMs: med, minMs: s[0], maxMs: s[s.length - 1], runs: s.length };
}

/** One result from several rounds of the same case: all samples, their median and range. */
export function mergeResults(rs: TorchResult[]): TorchResult {
  const bad = rs.find((r) => r.error);
  if (bad || rs.length === 0) return bad ?? rs[0];
  const samples = rs.flatMap((r) => r.samplesMs);
  const st = summary(samples);
  return {
    ...rs[0],
    runs: samples.length,
    samplesMs: samples,
    medianMs: st.medianMs,
    minMs: st.minMs,
    maxMs: st.maxMs,
  };
}
