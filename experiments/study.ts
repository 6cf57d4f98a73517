// `deno task study`: the whole grid of stages × runs, one run after another here (--scheduler local)
// or as one Slurm job array (--scheduler slurm), and --status of every run (see --help).

import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  formatStatus,
  LOG_ERROR,
  LOG_EXIT,
  LOG_START,
  parseLogTail,
  parseStudyArgs,
  planGrid,
  runStatus,
  STUDY_HELP,
  type StudyCli,
  trainArgsFor,
} from "./study_plan.ts";
import { sbatchScript, submit, type TaskState, taskStates } from "./slurm.ts";
import { runPaths, type RunSummary, writeAtomic } from "./results.ts";
import type { Stage } from "../models/stages.ts";

const PROJECT_DIR = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");

/** What `--scheduler slurm` remembers in <results>/slurm/study.json, so --status knows the plan. */
interface Submission {
  jobId: string;
  submitted: string;
  script: string;
  stages: Stage[];
  runs: number;
  epochs: number;
  trainArgs: string[];
}

const submissionsPath = (results: string) => `${results}/slurm/study.json`;

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`cannot read ${path}: ${(e as Error).message}`);
  }
}

/** The last 64 KiB of a log (enough for its tail; logs grow by a progress line every few steps). */
async function readTail(path: string): Promise<{ text: string; ageSeconds: number } | undefined> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  try {
    const st = await f.stat();
    const n = Math.min(st.size, 65536);
    await f.seek(st.size - n, Deno.SeekMode.Start);
    const buf = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const k = await f.read(buf.subarray(got));
      if (k === null) break;
      got += k;
    }
    const ageSeconds = (Date.now() - (st.mtime?.getTime() ?? Date.now())) / 1000;
    return { text: new TextDecoder().decode(buf.subarray(0, got)), ageSeconds };
  } finally {
    f.close();
  }
}

async function status(cli: StudyCli): Promise<number> {
  const subs = await readJson<Submission[]>(submissionsPath(cli.results));
  const last = subs?.at(-1);
  // a submitted study's plan is the one it was submitted with
  const plan = last
    ? planGrid(last.stages, last.runs, cli.results)
    : planGrid(cli.stages, cli.runs, cli.results);
  const epochs = last?.epochs ?? cli.epochs;
  let states = new Map<number, TaskState>();
  if (last) {
    console.log(`Slurm job ${last.jobId} (submitted ${last.submitted}, script ${last.script})`);
    const t = await taskStates(last.jobId, plan);
    states = t.states;
    if (t.note) console.log(`note: ${t.note}`);
  }
  const rows = [];
  for (const p of plan) {
    const summary = await readJson<RunSummary>(runPaths(p.out, p.run).summary);
    const tail = await readTail(p.log);
    const n = summary?.config?.epochs ?? epochs;
    rows.push({
      plan: p,
      status: runStatus({
        summary,
        log: tail && parseLogTail(tail.text, tail.ageSeconds),
        slurm: states.get(p.index),
      }, n),
    });
  }
  console.log(formatStatus(rows));
  return 0;
}

/** Copies a child's output stream to our own stream and to the run's log; gives its last line. */
async function tee(
  src: ReadableStream<Uint8Array>,
  dst: typeof Deno.stdout,
  log: Deno.FsFile,
): Promise<string> {
  const dec = new TextDecoder();
  let tail = "";
  for await (const chunk of src) {
    await dst.write(chunk);
    await log.write(chunk);
    tail = (tail + dec.decode(chunk, { stream: true })).slice(-4096);
  }
  return tail.split("\n").map((l) => l.trim()).filter((l) => l).at(-1) ?? "";
}

/** --scheduler local: one `train` process per run, in order; complete runs are skipped. */
async function runLocal(cli: StudyCli): Promise<number> {
  const plan = planGrid(cli.stages, cli.runs, cli.results);
  let stopSignal: Deno.Signal | null = null;
  let child: Deno.ChildProcess | null = null;
  // Ctrl-C reaches the trainer too (same terminal): it checkpoints and exits, then the study stops.
  // A SIGTERM sent to the study alone is passed on.
  const onInt = () => (stopSignal = "SIGINT");
  const onTerm = () => {
    stopSignal = "SIGTERM";
    child?.kill("SIGTERM");
  };
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  const failed: string[] = [];
  try {
    for (const p of plan) {
      if (stopSignal) break;
      const summary = await readJson<RunSummary>(runPaths(p.out, p.run).summary);
      if (summary?.complete) {
        console.log(`study: ${p.stage} run ${p.run} already complete, skipped`);
        continue;
      }
      await Deno.mkdir(p.out, { recursive: true });
      const log = await Deno.open(p.log, { append: true, create: true });
      const enc = new TextEncoder();
      try {
        const head =
          `${LOG_START} ${new Date().toISOString()} local pid ${Deno.pid} on ${Deno.hostname()}: ` +
          `${p.stage} run ${p.run}\n`;
        await log.write(enc.encode(head));
        console.log(`study: ${p.stage} run ${p.run} (${p.index + 1} of ${plan.length}), log in ${p.log}`);
        child = new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--allow-read",
            "--allow-write",
            "--allow-env",
            "--allow-net",
            "--config",
            `${PROJECT_DIR}/deno.json`,
            `${PROJECT_DIR}/experiments/train.ts`,
            ...trainArgsFor(p, cli.trainArgs),
          ],
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        const [, lastErr] = await Promise.all([
          tee(child.stdout, Deno.stdout, log),
          tee(child.stderr, Deno.stderr, log),
        ]);
        const { code } = await child.status;
        child = null;
        // stdout and stderr reach the log through two pipes, so their order there is not the
        // child's; the error line is repeated in a marker that --status reads.
        if (code !== 0 && lastErr) await log.write(enc.encode(`${LOG_ERROR}${lastErr}\n`));
        await log.write(enc.encode(`${LOG_EXIT}${code}\n`));
        if (code === 130 || code === 143) {
          console.log(`study: stopped; run it again to resume ${p.stage} run ${p.run}`);
          return code;
        }
        if (code !== 0) failed.push(`${p.stage} run ${p.run} (exit ${code}, see ${p.log})`);
      } finally {
        log.close();
      }
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
  }
  if (stopSignal) return stopSignal === "SIGINT" ? 130 : 143;
  if (failed.length) {
    console.error(`study: ${failed.length} run(s) failed: ${failed.join("; ")}`);
    return 1;
  }
  const report = `deno task report${cli.results === "results" ? "" : ` --results ${cli.results}`}`;
  console.log(`study: all ${plan.length} runs complete in ${cli.results}; the table: ${report}`);
  return 0;
}

/** --scheduler slurm: writes the array script into <results>/slurm/ and submits it. */
async function runSlurm(cli: StudyCli): Promise<number> {
  const resultsDir = resolve(cli.results);
  const script = sbatchScript({
    stages: cli.stages,
    runs: cli.runs,
    projectDir: PROJECT_DIR,
    resultsDir,
    trainArgs: cli.trainArgs,
    slurm: cli.slurm,
  });
  if (cli.dryRun) {
    console.log(script);
    return 0;
  }
  await Deno.mkdir(`${resultsDir}/slurm`, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const path = `${resultsDir}/slurm/${cli.slurm.jobName}-${stamp}.sbatch`;
  await writeAtomic(path, script);
  const jobId = await submit(path);
  const subs = (await readJson<Submission[]>(submissionsPath(cli.results))) ?? [];
  subs.push({
    jobId,
    submitted: new Date().toISOString(),
    script: path,
    stages: cli.stages,
    runs: cli.runs,
    epochs: cli.epochs,
    trainArgs: cli.trainArgs,
  });
  await writeAtomic(submissionsPath(cli.results), JSON.stringify(subs, null, 2) + "\n");
  const n = cli.stages.length * cli.runs;
  console.log(`study: submitted job array ${jobId} (${n} tasks) from ${path}`);
  console.log(
    `study: logs in ${resultsDir}/<stage>/run<K>.log; progress: deno task study --status` +
      (cli.results === "results" ? "" : ` --results ${cli.results}`),
  );
  return 0;
}

export async function main(args: string[]): Promise<number> {
  const cli = parseStudyArgs(args);
  if (cli.help) {
    console.log(STUDY_HELP);
    return 0;
  }
  if (cli.status) return await status(cli);
  return cli.scheduler === "slurm" ? await runSlurm(cli) : await runLocal(cli);
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`study: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
