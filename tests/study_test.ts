// `deno task study` without a cluster: the grid, the flags, the sbatch script (run by bash against fake
// deno/squeue/scontrol), the squeue/sacct parsers, the status of each run, and the local backend.

import assert from "node:assert/strict";
import {
  formatStatus,
  parseLogTail,
  parseStudyArgs,
  planGrid,
  runStatus,
  slurmTimeSeconds,
  STALE_SECONDS,
  trainArgsFor,
} from "../experiments/study_plan.ts";
import {
  parseSacct,
  parseSbatchOutput,
  parseSqueue,
  sbatchScript,
  shellQuote,
} from "../experiments/slurm.ts";
import { parseTrainArgs, STAGES } from "../experiments/config.ts";
import { markdownTable, partialNote, readResults } from "../experiments/report.ts";
import { csvText } from "../experiments/results.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const dec = new TextDecoder();

async function study(args: string[], env?: Record<string, string>) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "experiments/study.ts", ...args],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("study flags: seven stages × 3 runs by default, training flags passed through", () => {
  const d = parseStudyArgs([]);
  assert.deepEqual([d.stages, d.runs, d.results, d.scheduler, d.epochs], [
    [...STAGES],
    3,
    "results",
    "local",
    100,
  ]);
  const c = parseStudyArgs([
    "--stages=base,final",
    "--runs",
    "2",
    "--epochs",
    "4",
    "--quick",
    "--scheduler",
    "slurm",
    "--gres",
    "gpu:1",
    "--max-parallel",
    "5",
    "--sbatch-args",
    " --cpus-per-task=4  --mem=16G ",
    "--results",
    "/shared/study",
  ]);
  assert.deepEqual(c.stages, ["base", "final"]);
  assert.deepEqual(c.trainArgs, ["--epochs", "4", "--quick"]);
  assert.equal(c.epochs, 4);
  assert.deepEqual([c.slurm.gres, c.slurm.maxParallel, c.slurm.sbatchArgs], [
    "gpu:1",
    5,
    ["--cpus-per-task=4", "--mem=16G"],
  ]);
});

Deno.test("train --run K: one run of the grid (what an array task trains)", () => {
  assert.deepEqual(parseTrainArgs(["--runs", "3"]).runIndices, [0, 1, 2]);
  assert.deepEqual(parseTrainArgs(["--run", "2"]).runIndices, [2]);
  assert.deepEqual(parseTrainArgs(["--run", "1", "--runs", "3"]).runIndices, [1]);
  assert.throws(() => parseTrainArgs(["--run", "3", "--runs", "3"]), /--run 3 is not one of the 3 runs/);
  assert.throws(() => parseTrainArgs(["--run=-1"]), /--run needs an integer ≥ 0/);
});

Deno.test("study flags: bad input gives clear errors", () => {
  assert.throws(() => parseStudyArgs(["--stage", "final"]), /--stage is set by the study .* use --stages/);
  assert.throws(() => parseStudyArgs(["--out", "x"]), /--out is set by the study/);
  assert.throws(() => parseStudyArgs(["--stages", "base,nope"]), /Unknown stage "nope"/);
  assert.throws(() => parseStudyArgs(["--stages", "base,base"]), /names "base" twice/);
  assert.throws(() => parseStudyArgs(["--runs", "0"]), /--runs needs an integer ≥ 1/);
  assert.throws(() => parseStudyArgs(["--scheduler", "pbs"]), /--scheduler must be "local" or "slurm"/);
  assert.throws(() => parseStudyArgs(["--gres", "gpu:1"]), /--gres needs --scheduler slurm/);
  assert.throws(() => parseStudyArgs(["--bogus"]), /Unknown option '--bogus'/);
  assert.throws(() => parseStudyArgs(["--epochs", "0"]), /--epochs needs an integer ≥ 1/);
  assert.throws(() => parseStudyArgs(["--max-parallel"]), /--max-parallel needs a value/);
  assert.throws(() => parseStudyArgs(["--scheduler=slurm", "--time=2:00"]), /--time 2:00 is too short/);
  assert.throws(
    () => parseStudyArgs(["--scheduler=slurm", "--time=1h"]),
    /--time must be a Slurm time limit/,
  );
  assert.throws(() => parseStudyArgs(["--scheduler=slurm", "--job-name", "a b"]), /--job-name may hold/);
});

Deno.test("Slurm time limits in seconds", () => {
  const cases: [string, number][] = [
    ["90", 5400],
    ["10:30", 630],
    ["24:00:00", 86400],
    ["2-0", 172800],
    ["1-2:30", 95400],
    ["1-00:00:05", 86405],
    ["UNLIMITED", Infinity],
  ];
  for (const [t, s] of cases) assert.equal(slurmTimeSeconds(t), s, t);
});

Deno.test("the grid: array index i is stage i / runs, run i % runs", () => {
  const plan = planGrid(["base", "patchify", "final"], 2, "res");
  assert.deepEqual(plan.map((p) => [p.index, p.stage, p.run]), [
    [0, "base", 0],
    [1, "base", 1],
    [2, "patchify", 0],
    [3, "patchify", 1],
    [4, "final", 0],
    [5, "final", 1],
  ]);
  assert.deepEqual([plan[3].out, plan[3].log], ["res/patchify", "res/patchify/run1.log"]);
  assert.deepEqual(trainArgsFor(plan[5], ["--epochs", "1"]), [
    "--stage",
    "final",
    "--run",
    "1",
    "--out",
    "res/final",
    "--resume",
    "--epochs",
    "1",
  ]);
});

Deno.test("squeue, sacct and sbatch output are parsed", () => {
  const sq = parseSqueue("0|RUNNING|None\n1|PENDING|BeginTime\n3|COMPLETED|None\nNOTE: x\n");
  assert.deepEqual([...sq.keys()], [0, 1, 3]);
  assert.deepEqual(sq.get(1), { state: "PENDING", reason: "BeginTime" });
  const sa = parseSacct("12_0|COMPLETED\n12_1|FAILED\n12_[2-5%2]|PENDING\n12_6|CANCELLED by 0\n");
  assert.deepEqual([...sa.entries()].map(([k, v]) => [k, v.state]), [
    [0, "COMPLETED"],
    [1, "FAILED"],
    [6, "CANCELLED"],
  ]);
  assert.equal(parseSbatchOutput("4242\n"), "4242");
  assert.equal(parseSbatchOutput("4242;cluster\n"), "4242");
  assert.throws(
    () => parseSbatchOutput("sbatch: error: Batch job submission failed"),
    /did not print a job id/,
  );
  assert.equal(shellQuote("--widths"), "--widths");
  assert.equal(shellQuote("it's a b"), `'it'\\''s a b'`);
});

Deno.test("run status from its files and its Slurm task", () => {
  const tail = (text: string, age = 5) => parseLogTail(text, age);
  const running = "study: start 2026 job 1_0\nepoch 1/3 [####] 5/10 steps\n";
  assert.deepEqual(tail(running), {
    lastLine: "epoch 1/3 [####] 5/10 steps",
    exitCode: undefined,
    ageSeconds: 5,
  });
  const failed =
    "study: start x\nWebGPU adapter: y\ntrain: Training diverged: the loss became NaN\nstudy: exit 1\n";
  assert.equal(tail(failed).exitCode, 1);
  // stdout's lines may land after stderr's: the error marker names the error
  const raced = "study: start x\ntrain: data missing\nkernels: autotune off\n" +
    "study: error: train: data missing\nstudy: exit 1\n";
  assert.deepEqual(tail(raced), { lastLine: "train: data missing", exitCode: 1, ageSeconds: 5 });
  // a new attempt after an exit line has no exit code yet
  assert.equal(tail(failed + "study: start again\n").exitCode, undefined);
  const summary = (epochsCompleted: number, complete = false) => ({
    epochsCompleted,
    complete,
    reported: { accuracy: 0.8123, epoch: 2 },
  });
  const cases: [Parameters<typeof runStatus>[0], string][] = [
    [{}, "pending"],
    [{ summary: summary(3, true) }, "complete: 3 epochs, reported 81.23% (epoch 2)"],
    [{ summary: summary(1), slurm: { state: "RUNNING" } }, "running (epoch 2 of 3)"],
    [{ slurm: { state: "PENDING", reason: "Resources" } }, "pending (Resources)"],
    [
      { summary: summary(1), slurm: { state: "PENDING", reason: "BeginTime" } },
      "pending (BeginTime), 1 of 3 epochs done",
    ],
    [
      { log: tail(failed), slurm: { state: "FAILED" } },
      "failed (Slurm FAILED): train: Training diverged: the loss became NaN",
    ],
    [{ log: tail(failed) }, "failed (exit 1): train: Training diverged: the loss became NaN"],
    [{ summary: summary(2), log: tail(running) }, "running (epoch 3 of 3)"],
    [
      { summary: summary(2), log: tail("study: start\nstudy: exit 143\n") },
      "stopped, 2 of 3 epochs done (resumes when run again)",
    ],
    [{ summary: summary(2) }, "stopped after 2 of 3 epochs (resumes when run again)"],
  ];
  for (const [facts, want] of cases) assert.equal(runStatus(facts, 3).detail, want, JSON.stringify(facts));
  const stale = runStatus({ summary: summary(1), log: tail(running, STALE_SECONDS + 60) }, 3);
  assert.equal(stale.state, "stopped");
  assert.match(stale.detail, /^interrupted, 1 of 3 epochs done \(no output for 16 min\)/);
  const plan = planGrid(["final"], 2, "r");
  const text = formatStatus([
    { plan: plan[0], status: runStatus({ summary: summary(3, true) }, 3) },
    { plan: plan[1], status: runStatus({}, 3) },
  ]);
  assert.match(text, /^final run 0 {2}complete: 3 epochs/);
  assert.match(text, /\n2 runs: 1 complete, 1 pending$/);
});

/** A folder of fake commands for the script: deno records its arguments and obeys FAKE_TRAIN. */
async function fakeBin(dir: string): Promise<void> {
  const scripts: Record<string, string> = {
    deno: `#!/bin/bash
echo "$*" >>"$FAKE_LOG/deno.args"
echo "trainer started"
case "$FAKE_TRAIN" in
  ok) echo "trainer done"; exit 0 ;;
  fail) echo "train: something broke" >&2; exit 1 ;;
  wait) trap 'echo "trainer got TERM"; exit 143' TERM; touch "$FAKE_LOG/ready"; for i in $(seq 40); do sleep 0.1; done; exit 0 ;;
esac`,
    squeue: `#!/bin/bash\necho "$FAKE_SQUEUE"`,
    scontrol: `#!/bin/bash\necho "$*" >>"$FAKE_LOG/scontrol.args"`,
  };
  await Deno.mkdir(dir, { recursive: true });
  for (const [name, text] of Object.entries(scripts)) {
    await Deno.writeTextFile(`${dir}/${name}`, text + "\n");
    await Deno.chmod(`${dir}/${name}`, 0o755);
  }
}

Deno.test("the sbatch script: directives, and each task trains its run, resumes, and requeues on the time-limit warning", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cli = parseStudyArgs([
      "--scheduler=slurm",
      "--stages=base,final",
      "--runs=2",
      "--max-parallel=2",
      "--partition=gpu",
      "--gres=gpu:1",
      "--time=1:00:00",
      "--sbatch-args=--mem=8G",
      "--epochs=2",
      "--widths=8,16,32,64",
    ]);
    const script = sbatchScript({
      stages: cli.stages,
      runs: cli.runs,
      projectDir: dir,
      resultsDir: `${dir}/res`,
      trainArgs: cli.trainArgs,
      slurm: cli.slurm,
    });
    const directives = script.split("\n").filter((l) => l.startsWith("#SBATCH ")).map((l) => l.slice(8));
    assert.deepEqual(directives, [
      "--job-name=convnext-study",
      "--array=0-3%2",
      `--output=${dir}/res/slurm/%A_%a.out`,
      "--open-mode=append",
      "--requeue",
      "--signal=B:TERM@120",
      "--partition=gpu",
      "--gres=gpu:1",
      "--time=1:00:00",
      "--mem=8G",
    ]);
    await Deno.writeTextFile(`${dir}/study.sbatch`, script);
    await fakeBin(`${dir}/bin`);
    const exec = (task: number, train: string, squeue = "RUNNING") =>
      new Deno.Command("bash", {
        args: [`${dir}/study.sbatch`],
        env: {
          PATH: `${dir}/bin:${Deno.env.get("PATH")}`,
          SLURM_ARRAY_TASK_ID: String(task),
          SLURM_ARRAY_JOB_ID: "77",
          SLURM_JOB_ID: String(80 + task),
          FAKE_LOG: dir,
          FAKE_TRAIN: train,
          FAKE_SQUEUE: squeue,
        },
        stdout: "piped",
        stderr: "piped",
      });
    // task 3 = final run 1
    assert.equal((await exec(3, "ok").output()).code, 0);
    assert.equal(
      (await Deno.readTextFile(`${dir}/deno.args`)).trim(),
      `task train --stage final --run 1 --out ${dir}/res/final --resume --epochs=2 --widths=8,16,32,64`,
    );
    const log3 = await Deno.readTextFile(`${dir}/res/final/run1.log`);
    assert.match(
      log3,
      /^study: start \S+ job 77_3 \(id 83\) on .*restart 0: final run 1\ntrainer started\ntrainer done\nstudy: exit 0\n$/,
    );
    // a failing run: its exit status is the task's, and its error is the log's last trainer line
    assert.equal((await exec(1, "fail").output()).code, 1);
    assert.match(
      await Deno.readTextFile(`${dir}/res/base/run1.log`),
      /train: something broke\nstudy: exit 1\n$/,
    );
    // a complete run exits at once without starting the trainer
    await Deno.writeTextFile(`${dir}/res/final/run1.json`, JSON.stringify({ complete: true }, null, 2));
    await Deno.remove(`${dir}/deno.args`);
    assert.equal((await exec(3, "fail").output()).code, 0);
    assert.equal(await Deno.stat(`${dir}/deno.args`).then(() => true, () => false), false);

    const signalled = async (squeue: string) => {
      await Deno.remove(`${dir}/ready`).catch(() => {});
      const p = exec(0, "wait", squeue).spawn();
      while (!(await Deno.stat(`${dir}/ready`).then(() => true, () => false))) {
        await new Promise((r) => setTimeout(r, 50));
      }
      p.kill("SIGTERM"); // to the batch shell alone, as --signal=B:TERM does
      return (await p.output()).code;
    };
    // the time-limit warning while the job runs: the trainer is told, then the task requeues itself
    assert.notEqual(await signalled("RUNNING"), 0);
    const log0 = await Deno.readTextFile(`${dir}/res/base/run0.log`);
    assert.match(
      log0,
      /study: time limit in 120 s: checkpointing, then requeueing this task\ntrainer got TERM\nstudy: exit 143\n$/,
    );
    assert.equal(await Deno.readTextFile(`${dir}/scontrol.args`), "requeue 80\n");
    // Slurm stopping the job (requeue, preemption, cancel) signals the trainer itself: no requeue here
    await Deno.remove(`${dir}/scontrol.args`);
    await signalled("COMPLETING").then(() => {}); // the fake trainer runs on to its end
    assert.equal(await Deno.stat(`${dir}/scontrol.args`).then(() => true, () => false), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task study: --dry-run prints the script, the local backend skips complete runs and reports failures", async () => {
  const dry = await study([
    "--scheduler",
    "slurm",
    "--dry-run",
    "--stages",
    "final",
    "--runs",
    "2",
    "--epochs",
    "3",
  ]);
  assert.equal(dry.code, 0, dry.err);
  assert.match(dry.out, /^#!\/bin\/bash\n/);
  assert.match(dry.out, /#SBATCH --array=0-1\n/);
  assert.match(dry.out, /deno task train --stage "\$stage" --run "\$run" --out "\$out" --resume --epochs 3 /);
  const help = await study(["--help"]);
  assert.match(help.out, /--max-parallel N/);
  const bad = await study(["--stages", "nope"]);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /^study: Unknown stage "nope"/);

  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/final`);
    const done = {
      stage: "final",
      run: 0,
      complete: true,
      epochsCompleted: 1,
      reported: { accuracy: 0.5, epoch: 1 },
    };
    await Deno.writeTextFile(`${dir}/final/run0.json`, JSON.stringify(done));
    // run 1 fails at once (no data): the study goes on, then exits 1 naming it
    const args = [
      "--stages",
      "final",
      "--runs",
      "2",
      "--results",
      dir,
      "--quick",
      "--data-dir",
      `${dir}/no-data`,
    ];
    const r = await study(args);
    assert.equal(r.code, 1);
    assert.match(r.out, /study: final run 0 already complete, skipped/);
    assert.match(r.err, /study: 1 run\(s\) failed: final run 1 \(exit 1, see .*run1\.log\)/);
    const log = await Deno.readTextFile(`${dir}/final/run1.log`);
    assert.match(log, /^study: start .* local pid \d+ on .*: final run 1\n/);
    // the two pipes interleave in any order; the study repeats stderr's last line before the exit
    assert.match(
      log,
      /\nstudy: error: train: CIFAR-10 file data_batch_1\.bin is missing .*\nstudy: exit 1\n$/,
    );
    const st = await study(["--status", ...args]);
    assert.equal(st.code, 0, st.err);
    assert.match(st.out, /final run 0 {2}complete: 1 epochs, reported 50\.00% \(epoch 1\)\n/);
    assert.match(
      st.out,
      /final run 1 {2}failed \(exit 1\): train: CIFAR-10 file data_batch_1\.bin is missing/,
    );
    assert.match(st.out, /2 runs: 1 complete, 1 failed\n$/);
    // no Slurm here: the submission fails clearly and records no job
    const noSlurm = await study(["--scheduler", "slurm", "--results", dir, "--stages", "final"], {
      PATH: dir,
    });
    assert.equal(noSlurm.code, 1);
    assert.match(
      noSlurm.err,
      /^study: sbatch failed: sbatch not found \(is this a Slurm login node\? --dry-run/,
    );
    assert.equal(await Deno.stat(`${dir}/slurm/study.json`).then(() => true, () => false), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("report on a partial study: unfinished runs are counted and named, missing stages listed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const row = { epoch: 1, loss: 2, Train: 0.3, Validation: 0.3, Test: 0.4, lr: 0.004, seconds: 1 };
    for (const [run, complete] of [[0, true], [1, false]] as const) {
      await Deno.mkdir(`${dir}/final`, { recursive: true });
      await Deno.writeTextFile(`${dir}/final/run${run}.csv`, csvText([row]));
      const reported = { accuracy: 0.4, epoch: 1, rule: "best test accuracy" };
      const s = {
        stage: "final",
        run,
        complete,
        epochsCompleted: 1,
        reported,
        config: { epochs: complete ? 1 : 3 },
      };
      await Deno.writeTextFile(`${dir}/final/run${run}.json`, JSON.stringify(s));
    }
    const results = await readResults(dir);
    assert.match(
      markdownTable(results),
      /\| 7 \| `final` \| 2 \(1 unfinished\) \| 1 \| 0\.4000 ± 0\.0000 \|/,
    );
    assert.equal(
      partialNote(results),
      "Partial study: unfinished runs, counted with the epochs they have: `final` run 1 (1 of 3 epochs); " +
        "no runs yet: `base`, `stage_ratio`, `patchify`, `resnextify`, `inverted`, `kernel7`.",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
