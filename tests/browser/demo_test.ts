// `deno task test:browser`: the engine in headless Chromium (Dawn, SwiftShader on a machine without a
// GPU) through the page `deno task demo` serves:
//   1. the PyTorch golden fixtures replayed in the page pass the tolerances they pass in Deno;
//   2. three training steps of the narrow model give the same losses in Chromium as in Deno (≤ 1e-4);
//   3. ?plan= adds plan rules after the page's own, and a bad rule is a clear error;
//   4. `/?autostart` trains 20 steps, the loss falls, the banner follows the phases (loading, compiling,
//      training, evaluating, done), the time from Start to the first step is printed, a screenshot is written;
//   5. the model downloaded from the page loads in `deno task eval` (same test accuracy);
//   6. a checkpoint written by `deno task train` loads in the page (same test accuracy).
// Outputs (screenshot, downloads, the train run) go under $BROWSER_TEST_OUT (default results/browser/).

import assert from "node:assert/strict";
import { join } from "node:path";
import { initGPU } from "../../experiments/host.ts";
import { type CaseResult, JSON_FIXTURES, MODEL_FIXTURES, runJsonFixture } from "../../checks/golden_cases.ts";
import { trainStepsLosses } from "../../checks/train_steps_case.ts";
import { type DemoServer, startDemo } from "../../experiments/demo.ts";
import { openPage, type Session, waitFor } from "./chromium.ts";
import type { Status } from "../../web/session.ts";

const OUT = Deno.env.get("BROWSER_TEST_OUT") ?? "results/browser";
await Deno.mkdir(OUT, { recursive: true });
const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url);
const opts = { sanitizeOps: false, sanitizeResources: false };
// puppeteer rejects calls still in flight when a page closes ("detached Frame", "Target closed"); those are
// teardown noise, not test results
globalThis.addEventListener("unhandledrejection", (e) => {
  if (/detached Frame|Target closed/.test(String((e.reason as Error)?.message))) e.preventDefault();
});

// deno-lint-ignore no-explicit-any
type PageGlobal = any;

let demo: DemoServer | null = null;
async function server(): Promise<DemoServer> {
  demo ??= await startDemo({ port: 0, log: () => {} });
  return demo;
}

let blank: Session | null = null;
/** One page at `/` (no autostart) for the golden and training-step checks. */
async function checksPage(): Promise<Session> {
  if (!blank) {
    blank = await openPage((await server()).url + (Deno.env.get("DEMO_TEST_VERBOSE") ? "?debug" : ""));
    await blank.page.evaluate(() => (globalThis as PageGlobal).demo.ensureGpu());
  }
  return blank;
}

function table(rows: CaseResult[], deno?: CaseResult[]): string {
  return rows.map((r, i) =>
    `  ${r.fixture.padEnd(26)} ${r.name.padEnd(42)} chromium ${r.maxRelError.toExponential(2)}` +
    (deno ? `  deno ${deno[i].maxRelError.toExponential(2)}` : "") + `  (rtol ${r.rtol})`
  ).join("\n");
}

/** `fn` in the page, failing with `what` named when it takes longer than `seconds`. */
async function inPage<T>(what: string, seconds: number, fn: () => Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t0 = performance.now();
  try {
    return await Promise.race([
      fn(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${what}: no answer from the page in ${seconds} s`)),
          seconds * 1000,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (Deno.env.get("DEMO_TEST_VERBOSE")) {
      console.log(`${what}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
  }
}

Deno.test("PyTorch golden fixtures pass in Chromium as in Deno", opts, async () => {
  await initGPU();
  const s = await checksPage();
  const report: string[] = [];
  for (const name of JSON_FIXTURES) {
    const parsed = JSON.parse(await Deno.readTextFile(fixture(name)));
    const inDeno = await runJsonFixture(name, parsed);
    // case by case (optim.json is one trajectory), so a failure names its case
    const parts: unknown[] = "cases" in parsed
      ? parsed.cases.map((c: unknown) => ({ cases: [c] }))
      : [parsed];
    const fromPage: CaseResult[] = [];
    for (const [i, part] of parts.entries()) {
      fromPage.push(
        ...await inPage(
          `${name} part ${i + 1}/${parts.length}`,
          120,
          () => s.page.evaluate((n, p) => (globalThis as PageGlobal).demo.checks.golden(n, p), name, part),
        ),
      );
    }
    assert.deepEqual(fromPage.map((r) => r.name), inDeno.map((r) => r.name), `${name}: the same cases`);
    report.push(table(fromPage, inDeno));
    for (const r of [...inDeno, ...fromPage]) {
      assert.ok(r.pass, `${name} "${r.name}": worst error ${r.maxRelError} in ${r.worst} (rtol ${r.rtol})`);
    }
  }
  // kernel7's stride-2 7×7 depthwise weight gradient has only the direct kernel, which SwiftShader does
  // not finish compiling; the final model runs here (models_test.ts runs both in Deno)
  for (const name of MODEL_FIXTURES.filter((n) => n !== "models_kernel7.safetensors")) {
    const b64 = btoa(Array.from(await Deno.readFile(fixture(name)), (b) => String.fromCharCode(b)).join(""));
    const fromPage: CaseResult[] = await inPage(
      name,
      240,
      () => s.page.evaluate((n, b) => (globalThis as PageGlobal).demo.checks.goldenModel(n, b), name, b64),
    );
    report.push(table(fromPage));
    for (const r of fromPage) {
      assert.ok(r.pass, `${name} "${r.name}": worst error ${r.maxRelError} in ${r.worst}`);
    }
  }
  console.log(`worst |a − e| / (|e| + atol/rtol) per case:\n${report.join("\n")}`);
  assert.deepEqual(s.errors, []);
});

Deno.test(
  "three training steps of the narrow model: the same losses in Chromium and in Deno",
  opts,
  async () => {
    await initGPU();
    await blank?.close(); // a fresh page, whatever the golden test left behind
    blank = null;
    const s = await checksPage();
    const inDeno = await trainStepsLosses({ steps: 3, batchSize: 16, seed: 7 });
    const fromPage: number[] = await inPage(
      "three training steps",
      240,
      () =>
        s.page.evaluate(() =>
          (globalThis as PageGlobal).demo.checks.trainSteps({ steps: 3, batchSize: 16, seed: 7 })
        ),
    );
    console.log(
      `losses  deno     ${inDeno.map((l) => l.toFixed(6)).join(", ")}\n` +
        `        chromium ${fromPage.map((l) => l.toFixed(6)).join(", ")}`,
    );
    assert.equal(fromPage.length, 3);
    inDeno.forEach((l, i) => {
      const rel = Math.abs(fromPage[i] - l) / Math.abs(l);
      assert.ok(
        rel <= 1e-4,
        `step ${i + 1}: chromium ${fromPage[i]}, deno ${l} (relative difference ${rel})`,
      );
    });
    assert.deepEqual(s.errors, []);
    await s.close();
    blank = null;
  },
);

Deno.test(
  "?plan= adds the trainer's plan rules after the page's own; a bad one is a clear error",
  opts,
  async () => {
    const { url } = await server();
    const ok = await openPage(`${url}?plan=${encodeURIComponent("fuse.bias-gelu=off")}`);
    try {
      const adapter: string = await ok.page.evaluate(() => (globalThis as PageGlobal).demo.ensureGpu());
      const plan: string = await ok.page.evaluate(() => (globalThis as PageGlobal).demo.plan());
      const own = /swiftshader/i.test(adapter) ? "conv.weightGrad=depthwise/tiled," : "";
      assert.equal(plan, `${own}fuse.bias-gelu=off`);
      assert.deepEqual(ok.errors, []);
    } finally {
      await ok.close();
    }
    const bad = await openPage(`${url}?plan=${encodeURIComponent("conv=nonsense")}`);
    try {
      const err: string = await bad.page.evaluate(() =>
        (globalThis as PageGlobal).demo.ensureGpu().then(() => "no error", (e: Error) => e.message)
      );
      assert.match(err, /Plan override "conv=nonsense": unknown variant "nonsense"/);
      const message = await waitFor(
        bad.page,
        () => (globalThis as PageGlobal).document.querySelector("#message")?.textContent || null,
        "the page's error message",
        30_000,
        200,
      );
      assert.match(message, /unknown variant "nonsense"/);
    } finally {
      await bad.close();
    }
  },
);

let trained: Session | null = null;

Deno.test(
  "/?autostart trains 20 steps, the loss falls, the page evaluates; screenshot written",
  opts,
  async () => {
    const { url } = await server();
    const downloads = await Deno.makeTempDir({ prefix: "demo-downloads-" });
    // 320 training images at batch 16: one epoch of 20 steps, then the test-set evaluation (SwiftShader
    // runs a narrow step at batch 16 in ~2.5-6 s; before the first step the page compiles its kernels)
    trained = await openPage(`${url}?autostart&batchSize=16&trainImages=320&epochs=1&testImages=100`, {
      downloadDir: downloads,
    });
    (trained as Session & { downloads?: string }).downloads = downloads;
    const { page } = trained;
    // the banner and the state, sampled together while the run goes: the banner follows the phase
    const seen: { state: string; banner: string }[] = [];
    const status = await waitFor(
      page,
      () => {
        const d = (globalThis as PageGlobal).demo;
        const s = d?.status as Status | undefined;
        if (s) d.samples = [...(d.samples ?? []), { state: s.state, banner: d.banner() }];
        return s && (s.state === "done" || s.state === "error") ? s : null;
      },
      "the autostarted run to finish",
      900_000, // ~3 min on an idle 2-core machine; a loaded one (load 8) takes 5 s or more a step
      1000,
    );
    seen.push(...await page.evaluate(() => (globalThis as PageGlobal).demo.samples ?? []));
    const expected: Record<string, RegExp> = {
      loading: /^loading CIFAR-10/,
      compiling: /^compiling \d+ kernels \d+\/\d+…$/,
      training: /^training: epoch \d+, \d+\/20 steps/,
      evaluating: /^evaluating on the test set: \d+\/100 images$/,
      done: /^done \(first step [\d.]+ s after Start\)$/,
    };
    for (const { state, banner } of seen) {
      if (expected[state]) assert.match(banner, expected[state], `state ${state}, banner "${banner}"`);
    }
    console.log(`phases seen: ${[...new Set(seen.map((x) => x.state))].join(" → ")}`);
    // the time from Start to the end of the first step (loading, compiling and the step itself)
    const firstStep = status.firstStepSeconds;
    console.log(`Start → first step: ${firstStep?.toFixed(1)} s`);
    assert.ok(
      firstStep !== null && Number.isFinite(firstStep) && firstStep > 0,
      `firstStepSeconds ${firstStep}`,
    );
    const message = await page.$eval("#message", (e) => e.textContent);
    assert.equal(status.state, "done", `the run ended in "${status.state}": ${message}`);
    assert.equal(status.step, 20);
    const losses: number[] = await page.evaluate(() => (globalThis as PageGlobal).demo.losses);
    assert.equal(losses.length, 20);
    const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
    const first = mean(losses.slice(0, 5)), last = mean(losses.slice(-5));
    assert.ok(last < first, `the loss did not fall: first five steps ${first}, last five ${last}`);
    assert.ok(
      status.testAccuracy !== null && status.testAccuracy > 0.1,
      `test accuracy ${status.testAccuracy}`,
    );
    assert.ok(status.imagesPerSec !== null && status.imagesPerSec > 0);
    const cells = await page.$$eval("#grid figure", (f) => f.length);
    assert.ok(cells > 0, "the evaluation grid shows test images");
    const shot = join(OUT, "demo.png");
    await page.screenshot({ path: shot as `${string}.png`, fullPage: true });
    const adapter = await page.$eval("#adapter", (e) => e.textContent);
    console.log(
      `${adapter}; loss ${first.toFixed(3)} → ${last.toFixed(3)} (mean of the first and last five steps), ` +
        `test accuracy ${(100 * status.testAccuracy!).toFixed(1)}% on 100 images, ` +
        `${status.imagesPerSec!.toFixed(1)} images/s; screenshot ${shot}`,
    );
    assert.deepEqual(trained.errors, []);
  },
);

async function runDeno(args: string[]): Promise<string> {
  const r = await new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" }).output();
  const out = new TextDecoder().decode(r.stdout), err = new TextDecoder().decode(r.stderr);
  assert.ok(r.success, `deno ${args.join(" ")} failed:\n${out}\n${err}`);
  return out;
}

Deno.test(
  "a model downloaded from the page loads in `deno task eval` with the page's test accuracy",
  opts,
  async () => {
    assert.ok(trained, "needs the trained page of the previous test");
    const { page } = trained;
    const dir = (trained as Session & { downloads?: string }).downloads!;
    // the bytes the download button saves (the page builds both from session.checkpointBytes())
    const b64: string = await page.evaluate(() => (globalThis as PageGlobal).demo.checkpointBase64());
    const file = join(dir, "final-page.safetensors");
    await Deno.writeFile(file, Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
    const status: Status = await page.evaluate(() => (globalThis as PageGlobal).demo.status);
    // the notebook protocol evaluates in training mode, in batches of the training batch size
    const out = await runDeno([
      "run",
      "--allow-all",
      "experiments/eval.ts",
      "--checkpoint",
      file,
      "--eval-limit",
      "100",
      "--batch-size",
      "16",
      "--train-mode",
      "--json",
    ]);
    const ev = JSON.parse(out.trim().split("\n").at(-1)!) as {
      stage: string;
      accuracy: number;
      images: number;
    };
    assert.equal(ev.stage, "final");
    assert.equal(ev.images, 100);
    assert.ok(
      Math.abs(ev.accuracy - status.testAccuracy!) <= 0.01,
      `deno task eval: ${ev.accuracy}, page: ${status.testAccuracy}`,
    );
    await trained.close();
    trained = null;
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test(
  "a checkpoint written by `deno task train` loads in the page with the trainer's test accuracy",
  opts,
  async () => {
    const out = join(OUT, "train-run");
    await Deno.remove(out, { recursive: true }).catch(() => {});
    await runDeno([
      "run",
      "--allow-all",
      "experiments/train.ts",
      "--quick",
      "--epochs",
      "1",
      "--train-limit",
      "64",
      "--eval-limit",
      "64",
      "--out",
      out,
    ]);
    const summary = JSON.parse(await Deno.readTextFile(join(out, "run0.json"))) as { bestTest: number };
    const s = await openPage((await server()).url);
    try {
      const input = await s.page.$("#checkpoint");
      await (input as unknown as { uploadFile(p: string): Promise<void> }).uploadFile(
        join(out, "run0.last.safetensors"),
      );
      await waitFor(
        s.page,
        () => /^loaded /.test((globalThis as PageGlobal).document.getElementById("message").textContent),
        "the upload",
      );
      const widths = await s.page.$eval(
        'input[name="widths"]',
        (e) => (e as unknown as { value: string }).value,
      );
      assert.equal(widths, "16,32,64,128", "the form shows the checkpoint's configuration");
      await s.page.evaluate(() => (globalThis as PageGlobal).demo.evaluate());
      const status: Status = await s.page.evaluate(() => (globalThis as PageGlobal).demo.status);
      const msg = await s.page.$eval("#message", (e) => e.textContent);
      assert.ok(status.testAccuracy !== null, `no evaluation: ${msg}`);
      // the trainer's epoch 1 test accuracy: notebook protocol, 64 test images in one batch
      assert.ok(
        Math.abs(status.testAccuracy - summary.bestTest) <= 1 / 64 + 1e-9,
        `page ${status.testAccuracy}, trainer ${summary.bestTest}`,
      );
      assert.deepEqual(s.errors, []);
    } finally {
      await s.close();
      await demo?.shutdown();
      demo = null;
    }
  },
);
