// End to end on a real Slurm: scripts/slurm-cluster.sh brings up a one-node cluster on 127.0.0.1,
// `deno task study --scheduler slurm` submits a tiny grid (2 stages × 2 runs, 2 epochs, narrow models,
// few images, the CPU adapter), one task is requeued (`scontrol requeue`) after its first epoch, and
// every run must complete, the requeued one resuming from its checkpoint, with --status and the
// report working on the way. Skipped, saying why, where Slurm or munge is not installed or not root.
// A few minutes on a 2-core machine without a GPU.

import assert from "node:assert/strict";
import { cifar } from "./test_data.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const dec = new TextDecoder();

async function sh(cmd: string, args: string[], env: Record<string, string> = {}) {
  try {
    const r = await new Deno.Command(cmd, { args, cwd: ROOT, env, stdout: "piped", stderr: "piped" })
      .output();
    return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { code: 127, out: "", err: `${cmd}: not found` };
    throw e;
  }
}

async function skipReason(): Promise<string | null> {
  for (const c of ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol"]) {
    if ((await sh("bash", ["-c", `command -v ${c}`])).code !== 0) {
      return `${c} not found (apt-get install -y slurm-wlm munge)`;
    }
  }
  if ((await sh("id", ["-u"])).out.trim() !== "0") return "the one-node cluster's slurmd must run as root";
  if (!cifar.dir) return cifar.why;
  return null;
}

const reason = await skipReason();
if (reason) console.log(`slurm_test: skipped: ${reason}`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const readJson = (p: string) => Deno.readTextFile(p).then(JSON.parse, () => null);

Deno.test({
  name: "slurm: the study as a job array on a one-node cluster; a requeued task resumes from its checkpoint",
  ignore: reason !== null,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "slurm-test-" });
    const res = `${dir}/results`;
    const env = {
      SLURM_CONF: `${dir}/cluster/slurm.conf`,
      XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp",
    };
    const port = String(20000 + 2 * Math.floor(Math.random() * 10000));
    const data = cifar.dir!;
    const deno = (args: string[]) => sh(Deno.execPath(), ["run", "--allow-all", ...args], env);
    let jobId = "";
    const up = await sh("bash", ["scripts/slurm-cluster.sh", "start", `${dir}/cluster`], {
      SLURM_CLUSTER_PORT: port,
    });
    try {
      assert.equal(up.code, 0, `the cluster did not start:\n${up.out}${up.err}`);
      const grid = ["--stages", "base,final", "--runs", "2", "--results", res];
      const train = ["--epochs", "2", "--train-limit", "768", "--eval-limit", "64", "--batch-size", "32"]
        .concat([
          "--widths",
          "8,16,32,64",
          "--depths",
          "1,1,1,1",
          "--stem-features",
          "8",
          "--data-dir",
          data,
        ]);
      const sub = await deno([
        "experiments/study.ts",
        "--scheduler",
        "slurm",
        "--max-parallel",
        "2",
        ...grid,
        ...train,
      ]);
      assert.equal(sub.code, 0, sub.err);
      jobId = sub.out.match(/submitted job array (\d+) \(4 tasks\)/)?.[1] ?? "";
      assert.ok(jobId, sub.out);

      const runs = [["base", 0], ["base", 1], ["final", 0], ["final", 1]] as const;
      const summaries = () => Promise.all(runs.map(([s, k]) => readJson(`${res}/${s}/run${k}.json`)));
      const deadline = Date.now() + 12 * 60_000;
      let requeued = -1, midStatus = "", midReport = "";
      while (Date.now() < deadline) {
        const sums = await summaries();
        if (sums.every((s) => s?.complete)) break;
        // the first run past its first epoch, not finished: requeue its task (its checkpoint is on disk)
        const i = requeued < 0 ? sums.findIndex((s) => s && s.epochsCompleted >= 1 && !s.complete) : -1;
        if (i >= 0) {
          const rq = await sh("scontrol", ["requeue", `${jobId}_${i}`], env);
          assert.equal(rq.code, 0, rq.err);
          requeued = i;
          console.log(
            `requeued task ${jobId}_${i} (${runs[i].join(" run ")}) after epoch ${sums[i].epochsCompleted}`,
          );
          // --status and the report while the study is running
          const st = await deno(["experiments/study.ts", "--status", "--results", res]);
          assert.equal(st.code, 0, st.err);
          midStatus = st.out;
          const rep = await deno(["experiments/report.ts", "--results", res, "--out", `${dir}/mid-report`]);
          assert.equal(rep.code, 0, rep.err);
          midReport = rep.out;
        }
        if (requeued >= 0) {
          // a requeued job waits out a BeginTime delay (about 2 minutes): start it now
          const q = await sh("squeue", ["-h", "-j", `${jobId}_${requeued}`, "-o", "%T|%r"], env);
          if (q.out.trim() === "PENDING|BeginTime") {
            await sh("scontrol", ["update", `JobId=${jobId}_${requeued}`, "StartTime=now"], env);
          }
        }
        await sleep(requeued < 0 ? 250 : 1000); // epoch 2 may be short: look often until the requeue
      }
      const final = await deno(["experiments/study.ts", "--status", "--results", res]);
      console.log(`--status while running:\n${midStatus}\n--status at the end:\n${final.out}`);
      const sums = await summaries();
      assert.ok(requeued >= 0, "no task was requeued (no run was seen between its epochs)");
      assert.ok(sums.every((s) => s?.complete), `not every run completed in time:\n${final.out}`);
      assert.match(final.out, /4 runs: 4 complete/);
      assert.match(midStatus, /Slurm job \d+/);
      assert.match(midStatus, new RegExp(`${runs[requeued][0]} run ${runs[requeued][1]} +(pending|running)`));

      // the requeued run: a second start (restart 1) that resumed after epoch 1 and never redid it
      const [stage, run] = runs[requeued];
      const log = await Deno.readTextFile(`${res}/${stage}/run${run}.log`);
      const attempts = log.split(/^(?=study: start )/m).filter((a) => a.startsWith("study: start "));
      assert.equal(attempts.length, 2, log);
      assert.match(attempts[1], /restart 1: /);
      const resumed = attempts[1].match(
        new RegExp(`resuming run ${run} of ${stage} at epoch (\\d+), step (\\d+)`),
      );
      assert.ok(resumed, `the requeued run did not resume from a checkpoint:\n${attempts[1]}`);
      assert.ok(Number(resumed[1]) >= 2, `resumed at epoch ${resumed[1]}, not after epoch 1`);
      assert.doesNotMatch(attempts[1], /^epoch 1\/2 {2}loss/m);
      console.log(`requeued run's log:\n${log.split("\n").filter((l) => !/steps, /.test(l)).join("\n")}`);
      const csv = (await Deno.readTextFile(`${res}/${stage}/run${run}.csv`)).trim().split("\n");
      assert.deepEqual(csv.slice(1).map((l) => l.split(",")[0]), ["1", "2"]);

      // the partial report (one run had one epoch) and the final one
      assert.match(midReport, /\| `(base|final)` \| \d \(\d unfinished\) \| [12/]+ \|/);
      assert.match(
        midReport,
        /Partial study: unfinished runs, counted with the epochs they have: `(base|final)` run/,
      );
      const rep = await deno(["experiments/report.ts", "--results", res]);
      assert.equal(rep.code, 0, rep.err);
      assert.match(rep.out, /\| 1 \| `base` \| 2 \| 2 \|/);
      assert.match(rep.out, /\| 7 \| `final` \| 2 \| 2 \|/);
    } finally {
      if (jobId) await sh("scancel", [jobId], env);
      const down = await sh("bash", ["scripts/slurm-cluster.sh", "stop", `${dir}/cluster`]);
      if (down.code !== 0) console.error(down.err);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
