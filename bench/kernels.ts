// Every kernel on the real shapes of the models: each distinct leaf layer (bench/shapes.ts) forward
// and backward, the 1×1-conv GEMMs through kernels/matmul.ts, and the fused AdamW step over all the
// parameters of a model. Each row is validated first (bench/validate.ts: the kernel once on seeded data
// against its op's f64 CPU reference; a row that fails is reported and not timed), then timed: time per
// call (median, spread), GFLOP/s or GB/s, and the percentage of the roofline min(FMA peak, intensity ×
// copy bandwidth) measured by bench/ceilings.ts.

import { noGrad, numel, randn, scope } from "../autograd/tensor.ts";
import { Rng } from "../autograd/random.ts";
import { buildModel, type ModelOptions } from "../models/zoo.ts";
import { matmul, type MatmulDims } from "../kernels/matmul.ts";
import { planConv, planMatmul } from "../kernels/planner.ts";
import { acquireBuffer, releaseBuffer } from "../kernels/runtime.ts";
import type { Module } from "../nn/module.ts";
import { AdamW } from "../nn/optim.ts";
import { type Ceilings, roofline } from "./ceilings.ts";
import { convShapeOf, type LayerCase, layerCases } from "./shapes.ts";
import { Conv2d } from "../nn/layers.ts";
import { measure, type MeasureOptions, type Stats } from "./timing.ts";
import { type ResultHook, validateAdamW, validateGemm, validateLayer, type Validation } from "./validate.ts";

/** One measured kernel call. */
export interface KernelRow {
  /** e.g. "conv 1×1 64→256 @32×32", "groupNorm 128 @16×16". */
  name: string;
  /** The autograd op the row runs (conv2d, groupNorm, matmul, adamW, …), as its reference is named. */
  op: string;
  /** conv1x1, dwconv, conv, groupconv, norm, act, other, gemm, optim. */
  kind: string;
  /** The kernel variant the planner ran (convolutions and GEMMs). */
  variant?: string;
  /** forward, backward (input), backward (weight), backward. */
  pass: string;
  /** Input shape of the layer (or GEMM dims). */
  shape: string;
  /** Where the layer occurs: stage ×count. */
  uses: string;
  /** The check against the reference that ran before the timing. */
  validation: Validation;
  /** Null where the validation failed (the row is not timed); so are the rates below. */
  timing: Stats | null;
  flops: number;
  /** Compulsory memory traffic (each operand read or written once), bytes. */
  bytes: number;
  gflops: number | null;
  gbs: number | null;
  /** Which roof bounds this kernel at its arithmetic intensity. */
  bound: "compute" | "memory";
  /** Achieved / roofline bound, in percent. */
  pctRoofline: number | null;
}

/** A validated, timed row (its timing and rates present). */
export type TimedRow = KernelRow & { timing: Stats; gflops: number; gbs: number; pctRoofline: number };

export function isTimed(r: KernelRow): r is TimedRow {
  return r.timing !== null;
}

export interface KernelBenchOptions {
  batch: number;
  /** Stages whose every distinct layer is measured. */
  stages: string[];
  /** Stages from which only convolutions (not 1×1 stride 1) and BatchNorm are added. */
  extraStages: string[];
  filter?: (name: string) => boolean;
  timing: MeasureOptions;
  /** Also run the 1×1-conv GEMMs through kernels/matmul.ts (on by default). */
  gemm?: boolean;
  /** Measure the fused AdamW step over this stage's parameters (null: skip). */
  adamwStage?: string | null;
  /** Failures are appended here (the run goes on). */
  errors?: string[];
  /** Model overrides (e.g. narrow widths for a quick test); default the notebook's models. */
  model?: ModelOptions;
  /** Sees each row's kernel results before the validation compares them (tests inject a wrong value). */
  onResults?: ResultHook;
  log?: (line: string) => void;
}

function finish(
  c: Ceilings,
  base: Omit<KernelRow, "gflops" | "gbs" | "bound" | "pctRoofline">,
): KernelRow {
  const bound = base.flops > 0 && base.flops / base.bytes >= c.ridge ? "compute" : "memory";
  if (!base.timing) return { ...base, gflops: null, gbs: null, bound, pctRoofline: null };
  const s = base.timing.medianMs / 1e3;
  const gflops = base.flops / s / 1e9, gbs = base.bytes / s / 1e9;
  const pct = base.flops > 0 ? (gflops / roofline(c, base.flops, base.bytes)) * 100 : (gbs / c.copyGBs) * 100;
  return { ...base, gflops, gbs, bound, pctRoofline: pct };
}

/** Reports a row whose validation failed (it is not timed). */
function failed(row: KernelRow, opts: KernelBenchOptions): void {
  const msg =
    `${row.name} ${row.pass}: validation against ${row.validation.op}'s reference failed: ${row.validation.detail}`;
  opts.errors?.push(msg);
  opts.log?.(`  FAILED ${msg}`);
}

function usesText(u: Record<string, number>): string {
  return Object.entries(u).map(([s, n]) => `${s}×${n}`).join(" ");
}

/** Passes measured for a layer: which of (input, parameters) need a gradient in each. */
function passesOf(c: LayerCase, hasParams: boolean): { pass: string; x: boolean; params: boolean }[] {
  const out = [{ pass: "forward", x: false, params: false }];
  if (c.conv) {
    if (!c.isStem) out.push({ pass: "backward (input)", x: true, params: false });
    out.push({ pass: "backward (weight)", x: false, params: true });
  } else {
    out.push({ pass: "backward", x: !c.isStem, params: hasParams });
  }
  return out.filter((p) => p.pass === "forward" || p.x || p.params);
}

/** Measures each pass of one layer module on a random input of its real shape. */
async function benchLayer(
  m: Module,
  c: LayerCase,
  ceil: Ceilings,
  opts: KernelBenchOptions,
  rng: Rng,
): Promise<KernelRow[]> {
  const rows: KernelRow[] = [];
  const params = m.parameters();
  const x = randn(c.inShape, rng);
  const inN = numel(c.inShape), outN = numel(c.outShape);
  const pN = params.reduce((a, p) => a + p.size, 0);
  const saved = params.map((p) => p.requiresGrad);
  try {
    for (const p of passesOf(c, params.length > 0)) {
      const validation = await validateLayer(m, c, p, opts.onResults);
      const planPass = p.pass === "forward" ? "forward" : p.x ? "inputGrad" : "weightGrad";
      const described = {
        name: c.label,
        op: c.op,
        kind: c.kind,
        variant: m instanceof Conv2d ? planConv(convShapeOf(m, c.inShape), planPass).variant : undefined,
        pass: p.pass,
        shape: c.inShape.join("×"),
        uses: usesText(c.uses),
        validation,
        flops: c.conv ? c.flops : 0,
      };
      // conv: dy, the other operand and the result; others: dy, x, dx (+ parameters)
      const passBytes = p.pass === "forward" || c.conv
        ? 4 * (inN + outN + pN)
        : 4 * (outN + 2 * inN + (p.params ? 2 * pN : 0));
      if (validation.status === "failed") {
        const row = finish(ceil, { ...described, timing: null, bytes: passBytes });
        rows.push(row);
        failed(row, opts);
        continue;
      }
      let fn: () => void;
      let cleanup = () => {};
      if (p.pass === "forward") {
        fn = () => scope(() => void noGrad(() => m.forward(x)));
      } else {
        x.requiresGrad = p.x;
        params.forEach((t) => (t.requiresGrad = p.params));
        const y = m.forward(x);
        const g = randn(y.shape, rng);
        const node = y.node;
        if (!node) {
          y.dispose();
          g.dispose();
          continue;
        }
        fn = () => scope(() => void node.backward(g));
        cleanup = () => {
          y.dispose();
          g.dispose();
        };
      }
      const timing = await measure(fn, opts.timing);
      cleanup();
      const row = finish(ceil, { ...described, timing, bytes: passBytes });
      rows.push(row);
      opts.log?.(rowLine(row));
    }
  } finally {
    x.dispose();
    params.forEach((t, i) => (t.requiresGrad = saved[i]));
  }
  return rows;
}

/** One line of progress output for a row. */
export function rowLine(r: KernelRow): string {
  const head = `  ${r.name} ${r.pass}${r.variant ? ` [${r.variant}]` : ""}`;
  if (!isTimed(r)) return `${head}: FAILED validation (${r.validation.detail})`;
  const perf = r.flops > 0 ? `${r.gflops.toFixed(2)} GFLOP/s` : `${r.gbs.toFixed(2)} GB/s`;
  return `${head}: ${r.timing.medianMs.toFixed(3)} ms, ${perf}, ${r.pctRoofline.toFixed(1)}% of roof, ${
    validationText(r.validation)
  }`;
}

/** How a row was validated, in a few words ("ok at batch 8", "ok at batch 2 of 8", "FAILED"). */
export function validationText(v: Validation, rowBatch?: number): string {
  if (v.status === "failed") return "FAILED";
  if (v.op === "adamW") return "ok";
  return `ok at batch ${v.batch}${v.reduced && rowBatch ? ` of ${rowBatch}` : v.reduced ? " (reduced)" : ""}`;
}

/** The three GEMMs of a 1×1 convolution over N·H·W pixels (channels-last view), as matmul dims. */
export function conv1x1Gemms(
  pixels: number,
  cin: number,
  cout: number,
): { pass: string; d: MatmulDims; aN: number; bN: number }[] {
  const base = { batch: 1, batchA: false, batchB: false };
  return [
    // y [P, O] = x [P, C] · wᵀ (w stored [O, C])
    {
      pass: "forward",
      d: { ...base, m: pixels, k: cin, n: cout, transA: false, transB: true },
      aN: pixels * cin,
      bN: cout * cin,
    },
    // dx [P, C] = dy [P, O] · w [O, C]
    {
      pass: "backward (input)",
      d: { ...base, m: pixels, k: cout, n: cin, transA: false, transB: false },
      aN: pixels * cout,
      bN: cout * cin,
    },
    // dw [O, C] = dyᵀ (dy stored [P, O]) · x [P, C]
    {
      pass: "backward (weight)",
      d: { ...base, m: cout, k: pixels, n: cin, transA: true, transB: false },
      aN: pixels * cout,
      bN: pixels * cin,
    },
  ];
}

/** The 1×1 stride-1 convolutions among `cases` run as GEMMs through kernels/matmul.ts. */
async function benchGemms(
  cases: LayerCase[],
  ceil: Ceilings,
  opts: KernelBenchOptions,
): Promise<KernelRow[]> {
  const rows: KernelRow[] = [];
  const seen = new Set<string>();
  for (const c of cases) {
    if (c.kind !== "conv1x1" || c.conv!.stride !== 1 || c.conv!.cin < 4) continue;
    const [n, cin, h, w] = c.inShape;
    const key = `${n * h * w}:${cin}:${c.conv!.cout}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const layouts = [
      { tag: "NCHW", gemms: (images: number) => conv1x1GemmsNCHW(images, h * w, cin, c.conv!.cout) },
      { tag: "NHWC", gemms: (images: number) => conv1x1Gemms(images * h * w, cin, c.conv!.cout) },
    ];
    for (const { tag, gemms } of layouts) {
      const name = `gemm ${tag} ${c.label.replace(/^conv /, "")}`;
      if (opts.filter && !opts.filter(name)) continue;
      for (const [i, g] of gemms(n).entries()) {
        const outN = (g.d.sumBatch ? 1 : g.d.batch) * g.d.m * g.d.n;
        const validation = await validateGemm(`${name} ${g.pass}`, n, (k) => gemms(k)[i].d, opts.onResults);
        const described = {
          name,
          op: "matmul",
          kind: "gemm",
          variant: planMatmul(g.d).variant,
          pass: g.pass,
          shape: `${
            g.d.batch > 1 ? `${g.d.batch}${g.d.sumBatch ? "Σ" : "×"}` : ""
          }${g.d.m}×${g.d.k}×${g.d.n}${g.d.transA ? " Aᵀ" : ""}${g.d.transB ? " Bᵀ" : ""} (${
            planMatmul(g.d).variant
          })`,
          uses: usesText(c.uses),
          validation,
          flops: 2 * g.d.batch * g.d.m * g.d.n * g.d.k,
          bytes: 4 * (g.aN + g.bN + outN),
        };
        if (validation.status === "failed") {
          const row = finish(ceil, { ...described, timing: null });
          rows.push(row);
          failed(row, opts);
          continue;
        }
        const a = acquireBuffer(g.aN * 4), b = acquireBuffer(g.bN * 4), out = acquireBuffer(outN * 4);
        const timing = await measure(() => matmul(a, b, out, g.d), opts.timing);
        releaseBuffer(a);
        releaseBuffer(b);
        releaseBuffer(out);
        const row = finish(ceil, { ...described, timing });
        rows.push(row);
        opts.log?.(rowLine(row));
      }
    }
  }
  return rows;
}

/**
 * The GEMMs of a 1×1 convolution in NCHW, per image (P = H·W pixels), as kernels/conv1x1.ts computes
 * them: y[n] = w · x[n]; dx[n] = wᵀ · dy[n]; dw = Σ_n dy[n] · x[n]ᵀ (one summed-batch GEMM).
 */
export function conv1x1GemmsNCHW(
  batch: number,
  pixels: number,
  cin: number,
  cout: number,
): { pass: string; d: MatmulDims; aN: number; bN: number }[] {
  const x = batch * cin * pixels, y = batch * cout * pixels, w = cout * cin;
  return [
    {
      pass: "forward",
      d: { batch, m: cout, k: cin, n: pixels, transA: false, transB: false, batchA: false, batchB: true },
      aN: w,
      bN: x,
    },
    {
      pass: "backward (input)",
      d: { batch, m: cin, k: cout, n: pixels, transA: true, transB: false, batchA: false, batchB: true },
      aN: w,
      bN: y,
    },
    {
      pass: "backward (weight)",
      d: {
        batch,
        m: cout,
        k: pixels,
        n: cin,
        transA: false,
        transB: true,
        batchA: true,
        batchB: true,
        sumBatch: true,
      },
      aN: y,
      bN: x,
    },
  ];
}

/** The fused AdamW step over every parameter of `stage`'s model. */
async function benchAdamW(stage: string, ceil: Ceilings, opts: KernelBenchOptions): Promise<KernelRow> {
  const model = buildModel(stage, { seed: 1 });
  const params = model.parameters();
  const n = params.reduce((a, p) => a + p.size, 0);
  const opt = new AdamW(params, { lr: 0.004, weightDecay: 0.05 });
  const name = `AdamW ${stage} (${(n / 1e6).toFixed(2)} M params)`;
  const validation = await validateAdamW(`${name} step`, opt, opts.onResults);
  const timing = validation.status === "failed" ? null : await measure(() => opt.step(), opts.timing);
  opt.dispose();
  model.dispose();
  const row = finish(ceil, {
    name,
    op: "adamW",
    kind: "optim",
    pass: "step",
    shape: `${n}`,
    uses: `${stage}×1`,
    validation,
    timing,
    flops: 0,
    bytes: 7 * 4 * n, // read p, g, m, v; write p, m, v
  });
  if (!timing) failed(row, opts);
  else opts.log?.(rowLine(row));
  return row;
}

/** Which layer cases the kernel benchmark measures. */
export function selectCases(
  o: Pick<KernelBenchOptions, "batch" | "stages" | "extraStages" | "filter" | "model">,
): LayerCase[] {
  const main = layerCases(o.stages, o.batch, o.model);
  const have = new Set(main.map((c) => `${c.label}|${c.inShape}`));
  const extra = layerCases(o.extraStages, o.batch, o.model).filter((c) =>
    !have.has(`${c.label}|${c.inShape}`) &&
    ((c.conv && !(c.kind === "conv1x1" && c.conv.stride === 1)) || c.type === "BatchNorm2d")
  );
  return [...main, ...extra].filter((c) => !o.filter || o.filter(c.label));
}

/** Runs the kernel benchmark. */
export async function benchKernels(ceil: Ceilings, opts: KernelBenchOptions): Promise<KernelRow[]> {
  const cases = selectCases(opts);
  const rows: KernelRow[] = [];
  const rng = new Rng(1234);
  // layers are taken from a real (seeded) model of the stage of their first use
  const byStage = new Map<string, LayerCase[]>();
  for (const c of cases) byStage.set(c.stage, [...(byStage.get(c.stage) ?? []), c]);
  for (const [stage, list] of byStage) {
    const model = buildModel(stage, { ...opts.model, seed: 1 });
    model.train();
    const mods = new Map(model.namedModules());
    for (const c of list) {
      const m = mods.get(c.firstName);
      if (!m) continue;
      try {
        rows.push(...await benchLayer(m, c, ceil, opts, rng));
      } catch (e) {
        // one failing kernel must not hide the others: report it and go on
        const msg = `${c.label}: ${e instanceof Error ? e.message : e}`;
        opts.errors?.push(msg);
        opts.log?.(`  ERROR ${msg}`);
      }
    }
    model.dispose();
  }
  if (opts.gemm !== false) rows.push(...await benchGemms(cases, ceil, opts));
  if (opts.adamwStage) {
    const name = `AdamW ${opts.adamwStage}`;
    if (!opts.filter || opts.filter(name)) rows.push(await benchAdamW(opts.adamwStage, ceil, opts));
  }
  return rows;
}
