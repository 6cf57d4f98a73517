/// <reference lib="dom" />
// The demo page: settings form, start/pause/resume, live charts, a test-set evaluation, and model
// download/upload. `/?autostart` starts training at once; any form field can be set in the query
// (`/?autostart&batchSize=32&trainImages=2000`). Automation reads `globalThis.demo.status`.

import * as E from "./engine.ts";
import { loadData } from "./data.ts";
import { LiveChart } from "./charts.ts";
import { type Evaluation, type PageConfig, phaseText, Session, type Status } from "./session.ts";
import { checks } from "./checks.ts";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const form = $<HTMLFormElement>("form");
const field = (name: string) => form.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement;

const DEFAULTS: Record<string, string> = {
  stage: "final",
  widths: E.NARROW.widths.join(","),
  depths: E.NARROW.depths.join(","),
  stemFeatures: String(E.NARROW.stemFeatures),
  batchSize: "64",
  epochs: "2",
  lr: "0.004",
  weightDecay: "0.05",
  trainImages: "5000",
  testImages: "1000",
  seed: "0",
  protocol: "notebook",
};

function showMessage(text: string, kind: "error" | "info" = "error"): void {
  const m = $("message");
  m.textContent = text;
  m.className = `message ${kind === "info" ? "info" : ""}`;
  m.hidden = !text;
}

function list(name: string, v: string): number[] | undefined {
  if (!v.trim()) return undefined;
  const a = v.split(",").map((x) => Number(x.trim()));
  if (a.length !== 4 || a.some((x) => !Number.isInteger(x) || x <= 0)) {
    throw new Error(`${name} needs four positive integers separated by commas, got "${v}"`);
  }
  return a;
}

function num(name: string, v: string, { integer = true, min = 0 } = {}): number {
  const x = Number(v);
  if (!v.trim() || !Number.isFinite(x) || (integer && !Number.isInteger(x)) || x < min) {
    throw new Error(`${name} needs a${integer ? "n integer" : " number"} ≥ ${min}, got "${v}"`);
  }
  return x;
}

function readForm(): PageConfig {
  const v = (n: string) => field(n).value;
  const protocol = v("protocol");
  if (protocol !== "notebook" && protocol !== "clean") throw new Error(`unknown protocol "${protocol}"`);
  return {
    stage: E.checkStage(v("stage")),
    widths: list("widths", v("widths")),
    depths: list("depths", v("depths")),
    stemFeatures: v("stemFeatures").trim() ? num("stem features", v("stemFeatures"), { min: 1 }) : undefined,
    batchSize: num("batch size", v("batchSize"), { min: 1 }),
    epochs: num("epochs", v("epochs"), { min: 1 }),
    lr: num("learning rate", v("lr"), { integer: false }),
    weightDecay: num("weight decay", v("weightDecay"), { integer: false }),
    trainImages: num("training images", v("trainImages")),
    testImages: num("test images", v("testImages")),
    seed: num("seed", v("seed")),
    protocol,
  };
}

function writeForm(c: PageConfig): void {
  const set = (n: string, x: string) => field(n).value = x;
  set("stage", c.stage);
  set("widths", c.widths?.join(",") ?? "");
  set("depths", c.depths?.join(",") ?? "");
  set("stemFeatures", c.stemFeatures === undefined ? "" : String(c.stemFeatures));
  for (
    const k of ["batchSize", "epochs", "lr", "weightDecay", "trainImages", "testImages", "seed"] as const
  ) {
    set(k, String(c[k]));
  }
  set("protocol", c.protocol);
}

// ---------------------------------------------------------------- GPU

let gpuCtx: E.GPUContext | null = null;

async function ensureGpu(): Promise<E.GPUContext> {
  if (gpuCtx) return gpuCtx;
  if (!("gpu" in navigator)) {
    throw new Error(
      "This browser has no WebGPU (navigator.gpu is missing). Use Chrome or Edge 113 or newer, or another " +
        "browser with WebGPU enabled, and open the page from localhost or https.",
    );
  }
  const ctx = await E.initGPU();
  const q = new URLSearchParams(location.search);
  // Chromium's SwiftShader does not finish compiling the direct depthwise weight-gradient kernels
  // (a loop over 49 accumulators with guarded loads); the tiled ones compile in seconds. ?plan= adds
  // rules after that one (the trainer's --plan syntax, e.g. ?plan=fuse=off)
  const rules = [
    /swiftshader/i.test(ctx.adapterName) ? "conv.weightGrad=depthwise/tiled" : "",
    q.get("plan"),
  ];
  E.setPlanOverride(rules.filter(Boolean).join(",")); // throws on a bad ?plan=, before the GPU counts as ready
  gpuCtx = ctx;
  if (q.has("debug")) {
    // ?debug: name every pipeline as it is created (which kernel a hung compile belongs to)
    const d = gpuCtx.device, create = d.createComputePipeline.bind(d);
    d.createComputePipeline = (desc) => {
      console.log(`pipeline ${desc.label ?? "?"}`);
      return create(desc);
    };
  }
  // a validation error Dawn reports outside an error scope would otherwise go unseen
  gpuCtx.device.addEventListener("uncapturederror", (e) => {
    console.error(`WebGPU error: ${(e as GPUUncapturedErrorEvent).error.message}`);
  });
  $("adapter").textContent = `WebGPU adapter: ${gpuCtx.adapterName}${
    gpuCtx.isFallbackAdapter ? " (software)" : ""
  }`;
  return gpuCtx;
}

// ---------------------------------------------------------------- data

const data = (trainImages: number, progress?: (file: string, done: number, total: number) => void) =>
  loadData(trainImages, progress);

// ---------------------------------------------------------------- charts and evaluation

const lossChart = new LiveChart($("loss-chart"), "loss", "cross-entropy");
const accChart = new LiveChart($("accuracy-chart"), "accuracy", "accuracy");

function renderStatus(s: Status): void {
  const pct = (x: number | null) => x === null ? "–" : `${(100 * x).toFixed(1)}%`;
  $("s-state").textContent = s.state;
  $("s-epoch").textContent = s.epoch ? String(s.epoch) : "–";
  $("s-step").textContent = s.step ? String(s.step) : "–";
  $("s-loss").textContent = s.loss === null ? "–" : s.loss.toFixed(4);
  $("s-train").textContent = pct(s.trainAccuracy);
  $("s-test").textContent = pct(s.testAccuracy);
  $("s-speed").textContent = s.imagesPerSec === null ? "–" : `${s.imagesPerSec.toFixed(1)} images/s`;
  $("s-first").textContent = s.firstStepSeconds === null ? "–" : `${s.firstStepSeconds.toFixed(1)} s`;
  // the banner is the status's own text: it moves with the state (loading, compiling, training, …)
  const banner = phaseText(s);
  $("phase").textContent = banner;
  $("phase").hidden = !banner;
  const running = ["loading", "compiling", "training", "evaluating"].includes(s.state);
  const busy = running || s.state === "paused";
  $<HTMLButtonElement>("start").disabled = busy;
  $<HTMLButtonElement>("pause").disabled = !(s.state === "training" || s.state === "paused");
  $("pause").textContent = s.state === "paused" ? "Resume" : "Pause";
  $<HTMLButtonElement>("evaluate").disabled = running;
  $<HTMLButtonElement>("download").disabled = !session.model || running;
  $<HTMLInputElement>("checkpoint").disabled = busy;
}

function drawImage(canvas: HTMLCanvasElement, planar: Uint8Array): void {
  canvas.width = canvas.height = 32;
  const ctx = canvas.getContext("2d")!;
  const img = ctx.createImageData(32, 32);
  for (let p = 0; p < 1024; p++) {
    img.data[4 * p] = planar[p];
    img.data[4 * p + 1] = planar[1024 + p];
    img.data[4 * p + 2] = planar[2048 + p];
    img.data[4 * p + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function renderEvaluation(e: Evaluation): void {
  const classes = E.CIFAR10_CLASSES;
  $("eval-summary").textContent = `${(100 * e.accuracy).toFixed(2)}% of ${e.images} test images`;
  const table = $<HTMLTableElement>("per-class");
  table.replaceChildren();
  const head = table.insertRow();
  for (const t of ["class", "accuracy", "images"]) {
    head.appendChild(document.createElement("th")).textContent = t;
  }
  e.perClass.forEach((p, i) => {
    const r = table.insertRow();
    r.insertCell().textContent = classes[i];
    r.insertCell().textContent = p.total ? `${(100 * p.correct / p.total).toFixed(1)}%` : "–";
    r.insertCell().textContent = String(p.total);
  });
  const grid = $("grid");
  grid.replaceChildren();
  for (const s of e.samples) {
    const fig = document.createElement("figure");
    fig.className = s.predicted === s.label ? "right" : "wrong";
    const c = document.createElement("canvas");
    drawImage(c, s.image);
    const cap = document.createElement("figcaption");
    cap.textContent = `${classes[s.predicted]}`;
    cap.title = `predicted ${classes[s.predicted]}, true ${classes[s.label]}`;
    const truth = document.createElement("div");
    truth.textContent = `(${classes[s.label]})`;
    fig.append(c, cap, truth);
    grid.appendChild(fig);
  }
}

/** Every step's loss of the current run, for automation. */
const stepLosses: number[] = [];

const session = new Session({
  status: renderStatus,
  stepDone: (step, loss, accuracy) => {
    stepLosses.push(loss);
    void lossChart.add([{ step, value: loss, series: "train (step)" }]);
    void accChart.add([{ step, value: accuracy, series: "train batch (step)" }]);
  },
  epochDone: (step, row) => {
    void lossChart.add([{ step, value: row.loss, series: "train (epoch mean)" }]);
    void accChart.add([
      { step, value: row.train, series: "train (epoch)" },
      { step, value: row.test, series: "test (epoch)" },
    ]);
  },
  evaluated: renderEvaluation,
  log: (m) => showMessage(m, "info"),
}, data);

// ---------------------------------------------------------------- actions

async function guarded(what: string, fn: () => Promise<unknown>): Promise<void> {
  try {
    showMessage("");
    await fn();
  } catch (e) {
    const msg = `${what}: ${(e as Error).message}`;
    console.error(msg);
    showMessage(msg);
  }
}

async function start(): Promise<void> {
  const startedAt = performance.now(); // the page reports the time from here to the first step
  await guarded("training stopped", async () => {
    const c = readForm();
    const ctx = await ensureGpu();
    stepLosses.length = 0;
    await lossChart.clear();
    await accChart.clear();
    await session.train(c, ctx, startedAt);
    showMessage("training done: evaluate, download the model, or start again", "info");
  });
}

async function evaluate(): Promise<void> {
  await guarded("evaluation failed", async () => {
    await ensureGpu();
    await session.evaluate();
  });
}

async function download(): Promise<void> {
  await guarded("download failed", async () => {
    const bytes = await session.checkpointBytes();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(
      new Blob([bytes as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }),
    );
    a.download = `${session.config!.stage}-page.safetensors`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
  });
}

async function loadCheckpoint(file: File): Promise<void> {
  await guarded(`cannot load ${file.name}`, async () => {
    await ensureGpu();
    const cfg = session.loadCheckpoint(new Uint8Array(await file.arrayBuffer()), file.name, readForm());
    writeForm(cfg);
    showMessage(`loaded ${file.name}: evaluate it, or Start to continue training from it`, "info");
  });
}

function init(): void {
  const stage = field("stage") as HTMLSelectElement;
  for (const s of E.STAGES) stage.add(new Option(s, s));
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(DEFAULTS)) field(k).value = q.get(k) ?? v;
  stage.addEventListener("change", () => {
    // the narrow widths suit every stage; depths and stem default to the stage's own
    if (stage.value !== "final") field("depths").value = "";
  });
  $("start").addEventListener("click", () => void start());
  $("pause").addEventListener(
    "click",
    () => session.status.state === "paused" ? session.resume() : session.pause(),
  );
  $("evaluate").addEventListener("click", () => void evaluate());
  $("download").addEventListener("click", () => void download());
  const input = $<HTMLInputElement>("checkpoint");
  input.addEventListener("change", () => {
    const f = input.files?.[0];
    input.value = "";
    if (f) void loadCheckpoint(f);
  });
  renderStatus(session.status);
  (globalThis as unknown as { demo: unknown }).demo = {
    get status(): Status {
      return { ...session.status };
    },
    /** The banner's text (what the page says it is doing). */
    banner: () => $("phase").textContent ?? "",
    losses: stepLosses,
    start,
    pause: () => session.pause(),
    resume: () => session.resume(),
    evaluate,
    download,
    /** The bytes the download button saves, as base64 (automation cannot read a save dialog's file). */
    checkpointBase64: async () => {
      const b = await session.checkpointBytes();
      let bin = "";
      for (let i = 0; i < b.length; i += 0x8000) bin += String.fromCharCode(...b.subarray(i, i + 0x8000));
      return btoa(bin);
    },
    ensureGpu: async () => (await ensureGpu()).adapterName,
    /** The plan override in force (the adapter's rules, then ?plan=). */
    plan: () => E.planOverride(),
    checks,
  };
  ensureGpu().then(() => {
    if (q.has("autostart")) void start();
  }, (e) => {
    session.status.state = "error";
    renderStatus(session.status);
    showMessage((e as Error).message);
  });
}

init();
