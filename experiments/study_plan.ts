// The study's grid (stages × runs), its command line, and the status of each run, as pure functions:
// experiments/study.ts does the I/O, experiments/slurm.ts writes the sbatch script.
//
// Array index i ↔ (stage, run): stage = stages[floor(i / runs)], run = i mod runs, so the index a
// Slurm array task gets names its run without any shared state.

import { parseTrainArgs, type Stage, STAGES } from "./config.ts";
import { checkStage } from "../models/stages.ts";

export const STUDY_HELP = `deno task study [options] [training flags]

Runs the whole study: every stage × run, each with \`deno task train --stage S --run K --resume\`,
results in <results>/<stage>/run<K>.{csv,json,last.safetensors} and the run's log in run<K>.log.
Complete runs are skipped, unfinished ones resume from their checkpoint.

  --stages LIST        comma-separated stages, or all (default all: the seven steps)
  --runs N             runs per stage (default 3; run K uses seed seed+K)
  --results DIR        shared results folder (default results)
  --scheduler NAME     local (default): one run after another on this machine;
                       slurm: submit one sbatch job array, one task per run
  --status             show each run (pending, running, complete, failed) and exit
  -h, --help           this help

Slurm (with --scheduler slurm):
  --partition NAME     sbatch --partition
  --gres SPEC          sbatch --gres, e.g. gpu:1 (one GPU per run)
  --time LIMIT         sbatch --time per task (at least 5 minutes), e.g. 24:00:00; 120 s before
                       it the run checkpoints and the task requeues itself to go on
  --max-parallel N     at most N tasks at once (the %N of --array)
  --job-name NAME      default convnext-study
  --sbatch-args "..."  more sbatch options, split on spaces (e.g. "--cpus-per-task=4 --mem=16G")
  --dry-run            print the sbatch script instead of submitting it

Every other flag is passed to \`deno task train\` (e.g. --epochs, --train-limit, --widths, --quick,
--data-dir); --stage, --run, --out and --resume are set by the study. --status reads the plan of the
last Slurm submission from <results>/slurm/study.json; without one, give it the study's --stages,
--runs and --epochs.
`;

export type Scheduler = "local" | "slurm";

export interface SlurmOptions {
  partition?: string;
  gres?: string;
  time?: string;
  maxParallel?: number;
  jobName: string;
  sbatchArgs: string[];
}

export interface StudyCli {
  stages: Stage[];
  runs: number;
  results: string;
  scheduler: Scheduler;
  status: boolean;
  dryRun: boolean;
  help: boolean;
  slurm: SlurmOptions;
  /** Flags for `deno task train`, validated, in the order given. */
  trainArgs: string[];
  /** Epochs per run, as those flags set them. */
  epochs: number;
}

export interface PlannedRun {
  index: number;
  stage: Stage;
  run: number;
  /** The stage's folder in the results folder. */
  out: string;
  log: string;
}

const VALUE_FLAGS = [
  "stages",
  "runs",
  "results",
  "scheduler",
  "partition",
  "gres",
  "time",
  "max-parallel",
  "job-name",
  "sbatch-args",
] as const;
const BOOL_FLAGS = ["status", "dry-run", "help"] as const;
/** Training flags the study sets itself. */
const OWNED_TRAIN_FLAGS = ["stage", "run", "out", "resume"];

/** Seconds before the time limit at which a task's shell gets SIGTERM (--signal=B:TERM@…). */
export const WARN_SECONDS = 120;
/** The shortest --time accepted: the warning must leave a task time to train. */
export const MIN_TIME_SECONDS = 5 * 60;

/** Seconds in a Slurm time limit (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S); Infinity for UNLIMITED. */
export function slurmTimeSeconds(t: string): number {
  if (/^(unlimited|infinite)$/i.test(t)) return Infinity;
  const m = t.match(/^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/);
  if (!m) {
    throw new Error(`--time must be a Slurm time limit (M, M:S, H:M:S, D-H, D-H:M or D-H:M:S), got "${t}"`);
  }
  const [d, a, b, c] = [m[1], m[2], m[3], m[4]].map((x) => (x === undefined ? undefined : Number(x)));
  if (d !== undefined) return ((d * 24 + a!) * 60 + (b ?? 0)) * 60 + (c ?? 0);
  if (c !== undefined) return (a! * 60 + b!) * 60 + c;
  return b !== undefined ? a! * 60 + b : a! * 60;
}

function positiveInt(name: string, v: string): number {
  const x = Number(v);
  if (!Number.isInteger(x) || x < 1) throw new Error(`--${name} needs an integer ≥ 1, got "${v}"`);
  return x;
}

export function parseStages(v: string): Stage[] {
  if (v === "all") return [...STAGES];
  const list = v.split(",").map((s) => s.trim()).filter((s) => s);
  if (!list.length) throw new Error(`--stages needs a comma-separated list of stages or "all"`);
  const stages = list.map(checkStage);
  const dup = stages.find((s, i) => stages.indexOf(s) !== i);
  if (dup) throw new Error(`--stages names "${dup}" twice`);
  return stages;
}

/** Splits the study's own flags from the training flags, which pass through unchanged. */
export function parseStudyArgs(args: string[]): StudyCli {
  const own: Record<string, string | boolean> = {};
  const trainArgs: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const m = a.match(/^--([^=]+)(?:=(.*))?$/s);
    const name = a === "-h" ? "help" : m?.[1];
    if (name && (VALUE_FLAGS as readonly string[]).includes(name)) {
      const v = m?.[2] ?? args[++i];
      if (v === undefined) throw new Error(`--${name} needs a value`);
      own[name] = v;
    } else if (name && (BOOL_FLAGS as readonly string[]).includes(name)) {
      if (m?.[2] !== undefined) throw new Error(`--${name} takes no value`);
      own[name] = true;
    } else if (name && OWNED_TRAIN_FLAGS.includes(name)) {
      throw new Error(
        `--${name} is set by the study for each run; use --stages, --runs and --results to choose the grid`,
      );
    } else {
      trainArgs.push(a);
    }
  }
  const str = (k: string) => own[k] as string | undefined;
  const scheduler = str("scheduler") ?? "local";
  if (scheduler !== "local" && scheduler !== "slurm") {
    throw new Error(`--scheduler must be "local" or "slurm", got "${scheduler}"`);
  }
  const slurmOnly = ["partition", "gres", "time", "max-parallel", "job-name", "sbatch-args", "dry-run"];
  const misplaced = slurmOnly.find((k) => own[k] !== undefined);
  if (scheduler === "local" && misplaced) throw new Error(`--${misplaced} needs --scheduler slurm`);
  // the training flags are checked now, so a typo fails here and not in 21 array tasks
  const train = parseTrainArgs([...trainArgs, "--stage", "final"]);
  const time = str("time");
  if (time !== undefined && slurmTimeSeconds(time) < MIN_TIME_SECONDS) {
    throw new Error(
      `--time ${time} is too short: each task is told to checkpoint ${WARN_SECONDS} s before its limit, ` +
        `so give it at least ${MIN_TIME_SECONDS / 60} minutes (hours are usual)`,
    );
  }
  const jobName = str("job-name") ?? "convnext-study";
  if (!/^[\w.-]+$/.test(jobName)) throw new Error(`--job-name may hold letters, digits, _ . - only`);
  return {
    stages: parseStages(str("stages") ?? "all"),
    runs: str("runs") === undefined ? 3 : positiveInt("runs", str("runs")!),
    results: str("results") ?? "results",
    scheduler,
    status: own.status === true,
    dryRun: own["dry-run"] === true,
    help: own.help === true,
    slurm: {
      partition: str("partition"),
      gres: str("gres"),
      time,
      maxParallel: str("max-parallel") === undefined
        ? undefined
        : positiveInt("max-parallel", str("max-parallel")!),
      jobName,
      sbatchArgs: (str("sbatch-args") ?? "").split(/\s+/).filter((s) => s),
    },
    trainArgs,
    epochs: train.config.epochs,
  };
}

export function planGrid(stages: Stage[], runs: number, results: string): PlannedRun[] {
  return stages.flatMap((stage, s) =>
    Array.from({ length: runs }, (_, run) => ({
      index: s * runs + run,
      stage,
      run,
      out: `${results}/${stage}`,
      log: `${results}/${stage}/run${run}.log`,
    }))
  );
}

/** The arguments of `deno task train` for one run of the plan. */
export function trainArgsFor(p: PlannedRun, trainArgs: string[]): string[] {
  return ["--stage", p.stage, "--run", String(p.run), "--out", p.out, "--resume", ...trainArgs];
}

// ---- status ----

/** Marker lines the study writes into a run's log around each attempt. */
export const LOG_START = "study: start";
export const LOG_EXIT = "study: exit ";
/** The last line a failed attempt wrote to stderr (local backend). */
export const LOG_ERROR = "study: error: ";

export interface LogTail {
  /** The last line the trainer wrote (not a study marker). */
  lastLine: string;
  /** Exit status of the last attempt, when it ended (absent while it runs or after a hard kill). */
  exitCode?: number;
  /** Seconds since the log last changed. */
  ageSeconds: number;
}

export function parseLogTail(text: string, ageSeconds: number): LogTail {
  const lines = text.split("\n").map((l) => l.trimEnd()).filter((l) => l);
  let exitCode: number | undefined;
  let error: string | undefined;
  for (let i = lines.length - 1; i >= 0; i--) {
    if (lines[i].startsWith(LOG_START)) break;
    if (exitCode === undefined && lines[i].startsWith(LOG_EXIT)) {
      exitCode = Number.parseInt(lines[i].slice(LOG_EXIT.length));
    } else if (exitCode !== undefined && lines[i].startsWith(LOG_ERROR)) {
      error = lines[i].slice(LOG_ERROR.length);
      break;
    } else if (exitCode !== undefined) break;
  }
  const last = error ?? [...lines].reverse().find((l) => !l.startsWith("study: ")) ?? "";
  return { lastLine: last, exitCode, ageSeconds };
}

export interface RunFacts {
  /** From run<K>.json. */
  summary?: { complete?: boolean; epochsCompleted: number; reported?: { accuracy: number; epoch: number } };
  log?: LogTail;
  /** The Slurm state of its array task (squeue, else sacct), with squeue's reason. */
  slurm?: { state: string; reason?: string };
}

export type RunState = "pending" | "running" | "complete" | "failed" | "stopped";

export interface RunStatus {
  state: RunState;
  detail: string;
}

/** A log that has not changed for this long, without an exit line, is not running any more. */
export const STALE_SECONDS = 15 * 60;

const SLURM_ACTIVE = ["RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "RESIZING", "SIGNALING"];
const SLURM_WAITING = ["PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD"];

/** What one run is doing, from its files and (under Slurm) its task's state. */
export function runStatus(f: RunFacts, epochs: number): RunStatus {
  const done = f.summary?.epochsCompleted ?? 0;
  const progress = `epoch ${Math.min(done + 1, epochs)} of ${epochs}`;
  const doneText = done ? `, ${done} of ${epochs} epochs done` : "";
  const last = f.log?.lastLine ? `: ${f.log.lastLine}` : "";
  if (f.summary?.complete) {
    const r = f.summary.reported;
    const acc = r ? `, reported ${(r.accuracy * 100).toFixed(2)}% (epoch ${r.epoch})` : "";
    return { state: "complete", detail: `complete: ${done} epochs${acc}` };
  }
  const st = f.slurm?.state.split(/[ +]/)[0];
  if (st && SLURM_ACTIVE.includes(st)) return { state: "running", detail: `running (${progress})` };
  if (st && SLURM_WAITING.includes(st)) {
    const why = f.slurm?.reason && f.slurm.reason !== "None" ? ` (${f.slurm.reason})` : "";
    return { state: "pending", detail: `pending${why}${doneText}` };
  }
  if (st) return { state: "failed", detail: `failed (Slurm ${st}${doneText})${last}` };
  const log = f.log;
  if (!log) {
    return done
      ? { state: "stopped", detail: `stopped after ${done} of ${epochs} epochs (resumes when run again)` }
      : { state: "pending", detail: "pending" };
  }
  if (log.exitCode === undefined) {
    return log.ageSeconds < STALE_SECONDS ? { state: "running", detail: `running (${progress})` } : {
      state: "stopped",
      detail: `interrupted${doneText} (no output for ${Math.round(log.ageSeconds / 60)} min)${last}`,
    };
  }
  // 130 / 143: stopped by Ctrl-C or SIGTERM after writing a checkpoint
  if (log.exitCode === 130 || log.exitCode === 143) {
    return { state: "stopped", detail: `stopped${doneText} (resumes when run again)` };
  }
  return { state: "failed", detail: `failed (exit ${log.exitCode}${doneText})${last}` };
}

export function formatStatus(rows: { plan: PlannedRun; status: RunStatus }[]): string {
  const width = Math.max(...rows.map((r) => `${r.plan.stage} run ${r.plan.run}`.length));
  const lines = rows.map((r) => `${`${r.plan.stage} run ${r.plan.run}`.padEnd(width)}  ${r.status.detail}`);
  const counts = new Map<RunState, number>();
  for (const r of rows) counts.set(r.status.state, (counts.get(r.status.state) ?? 0) + 1);
  const order: RunState[] = ["complete", "running", "pending", "stopped", "failed"];
  const summary = order.filter((s) => counts.get(s)).map((s) => `${counts.get(s)} ${s}`).join(", ");
  return [...lines, `${rows.length} runs: ${summary}`].join("\n");
}
