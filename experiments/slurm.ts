// Slurm backend of `deno task study`: the sbatch job-array script (one task per run), submitting it,
// and reading the tasks' states back from squeue/sacct. The script and the parsers are pure.

import { LOG_EXIT, LOG_START, type PlannedRun, type SlurmOptions, WARN_SECONDS } from "./study_plan.ts";
import type { Stage } from "../models/stages.ts";

export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

export interface ScriptInput {
  stages: Stage[];
  runs: number;
  /** Absolute paths: where the project (deno.json) is, and the shared results folder. */
  projectDir: string;
  resultsDir: string;
  trainArgs: string[];
  slurm: SlurmOptions;
}

/** The sbatch script of the whole study: array task i trains stages[i / runs], run i % runs. */
export function sbatchScript(p: ScriptInput): string {
  const n = p.stages.length * p.runs;
  const q = shellQuote;
  const directives = [
    `--job-name=${p.slurm.jobName}`,
    `--array=0-${n - 1}${p.slurm.maxParallel ? `%${p.slurm.maxParallel}` : ""}`,
    `--output=${p.resultsDir}/slurm/%A_%a.out`,
    "--open-mode=append",
    "--requeue",
    `--signal=B:TERM@${WARN_SECONDS}`,
    ...(p.slurm.partition ? [`--partition=${p.slurm.partition}`] : []),
    ...(p.slurm.gres ? [`--gres=${p.slurm.gres}`] : []),
    ...(p.slurm.time ? [`--time=${p.slurm.time}`] : []),
    ...p.slurm.sbatchArgs,
  ];
  const train = ["--stage", '"$stage"', "--run", '"$run"', "--out", '"$out"', "--resume"]
    .concat(p.trainArgs.map(q)).join(" ");
  return `#!/bin/bash
# The ResNet → ConvNeXt study as one Slurm job array, written by \`deno task study --scheduler slurm\`:
# ${p.stages.length} stages × ${p.runs} runs = ${n} tasks; task i trains stage stages[i / runs], run i % runs.
# Each run writes only its own files in the shared results folder; a complete run exits at once, an
# unfinished one resumes from its last checkpoint (after a requeue, preemption or time limit).
# Submitting it by hand: create ${p.resultsDir}/slurm/ first (Slurm writes --output there).
${directives.map((d) => `#SBATCH ${d}`).join("\n")}
set -u
stages=(${p.stages.join(" ")})
runs=${p.runs}
i="\${SLURM_ARRAY_TASK_ID:?submit this script with sbatch: it is a job array}"
stage="\${stages[i / runs]}"
run=$((i % runs))
out=${q(`${p.resultsDir}`)}/"$stage"
log="$out/run$run.log"
mkdir -p "$out"
cd ${q(p.projectDir)} || exit 1
export XDG_RUNTIME_DIR="\${XDG_RUNTIME_DIR:-/tmp}"
export NO_COLOR=1 # plain logs
echo "${LOG_START} $(date -u +%FT%TZ) job \${SLURM_ARRAY_JOB_ID}_$i (id $SLURM_JOB_ID) on $(hostname)," \\
  "restart \${SLURM_RESTART_COUNT:-0}: $stage run $run" >>"$log"
if grep -qs '"complete": true' "$out/run$run.json"; then
  echo "$stage run $run: already complete" >>"$log"
  echo "${LOG_EXIT}0" >>"$log"
  exit 0
fi

# Requeue, preemption and cancel signal the whole job (the trainer checkpoints and exits by itself);
# the time-limit warning (--signal=B:TERM@${WARN_SECONDS}) reaches this shell alone, while the job still
# runs: pass it on, and requeue the task once the trainer has written its checkpoint.
warned=0
on_term() {
  if [ "$(timeout 30 squeue -h -j "$SLURM_JOB_ID" -o %T 2>/dev/null)" = RUNNING ]; then
    warned=1
    echo "study: time limit in ${WARN_SECONDS} s: checkpointing, then requeueing this task" >>"$log"
    kill -TERM "$child" 2>/dev/null
  fi
}
trap on_term TERM
deno task train ${train} >>"$log" 2>&1 &
child=$!
# \`wait\` returns early when a trapped signal arrives: wait until the trainer itself has exited
while :; do
  wait "$child"
  code=$?
  kill -0 "$child" 2>/dev/null || break
done
echo "${LOG_EXIT}$code" >>"$log"
if [ "$warned" = 1 ] && [ "$code" -ne 0 ]; then scontrol requeue "$SLURM_JOB_ID"; fi
exit "$code"
`;
}

/** `sbatch --parsable` prints "jobid" or "jobid;cluster". */
export function parseSbatchOutput(text: string): string {
  const id = text.trim().split(";")[0];
  if (!/^\d+$/.test(id)) throw new Error(`sbatch did not print a job id: "${text.trim()}"`);
  return id;
}

export interface TaskState {
  state: string;
  reason?: string;
}

/** Lines of `squeue -h -r -t all -j ID -o "%K|%T|%r"`: array task id, state, reason. */
export function parseSqueue(text: string): Map<number, TaskState> {
  const out = new Map<number, TaskState>();
  for (const line of text.split("\n")) {
    const [task, state, reason] = line.trim().split("|");
    if (state && /^\d+$/.test(task)) out.set(Number(task), { state, reason });
  }
  return out;
}

/** Lines of `sacct -n -P -X -j ID -o JobID,State`: "123_4|COMPLETED"; ranges of pending tasks skipped. */
export function parseSacct(text: string): Map<number, TaskState> {
  const out = new Map<number, TaskState>();
  for (const line of text.split("\n")) {
    const m = line.trim().match(/^\d+_(\d+)\|([A-Z_]+)/);
    if (m) out.set(Number(m[1]), { state: m[2] });
  }
  return out;
}

async function command(cmd: string, args: string[]): Promise<{ ok: boolean; out: string; err: string }> {
  try {
    const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    const dec = new TextDecoder();
    return { ok: r.success, out: dec.decode(r.stdout), err: dec.decode(r.stderr).trim() };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { ok: false, out: "", err: `${cmd} not found` };
    throw e;
  }
}

export async function submit(scriptPath: string): Promise<string> {
  const r = await command("sbatch", ["--parsable", scriptPath]);
  if (!r.ok) {
    throw new Error(
      `sbatch failed: ${r.err || "no message"}` +
        (r.err.endsWith("not found") ? " (is this a Slurm login node? --dry-run prints the script)" : ""),
    );
  }
  return parseSbatchOutput(r.out);
}

/** Each array task's state: squeue while Slurm remembers the job, else sacct (when accounting is on). */
export async function taskStates(
  jobId: string,
  plan: PlannedRun[],
): Promise<{ states: Map<number, TaskState>; note?: string }> {
  const sq = await command("squeue", ["-h", "-r", "-t", "all", "-j", jobId, "-o", "%K|%T|%r"]);
  const states = sq.ok ? parseSqueue(sq.out) : new Map<number, TaskState>();
  if (plan.every((p) => states.has(p.index))) return { states };
  const sa = await command("sacct", ["-n", "-P", "-X", "-j", jobId, "-o", "JobID,State"]);
  if (sa.ok) {
    for (const [k, v] of parseSacct(sa.out)) if (!states.has(k)) states.set(k, v);
  }
  const note = !sq.ok && !sa.ok
    ? `squeue/sacct gave no answer for job ${jobId} (${sq.err || sa.err}); states below come from the files`
    : undefined;
  return { states, note };
}
