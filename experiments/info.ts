// deno task info --stage <name> [--json] [--widths a,b,c,d] [--depths a,b,c,d] [--stem-features N]
//
// Prints a model's parameter count, forward FLOPs per 32×32 image (2 × multiply-adds of the conv and
// linear layers) and a per-layer table. The model is built on meta (shapes only) and its own forward
// runs on a meta input in a dry run (`Module.summary`), so the table comes from the code that trains;
// no GPU is needed.

import { parseArgs } from "node:util";
import { onMeta } from "../nn/module.ts";
import type { PlanEntry } from "../kernels/planner.ts";
import { buildModel, type ModelConfig, type ModelOptions, STAGES } from "../models/zoo.ts";
import { formatPlan, trainingStepPlan } from "../models/plan.ts";
import { applyKernelSettings, initGPU } from "./host.ts";

const USAGE = `deno task info --stage NAME [options]

Parameter count, forward FLOPs per 32×32 image and a per-layer table of one of the study's models.

  --stage NAME          ${STAGES.join("|")}
  --json                print one JSON object (stage, config, parameters, flops, layers)
  --widths a,b,c,d      channels per stage (default 64,128,256,512)
  --depths a,b,c,d      blocks per stage (default: the stage's)
  --stem-features N     channels after the stem (default 64)
  --num-classes N       default 10
  --image-size N        input height and width (default 32)
  --plan                also list the kernel plan of one training step: every conv and matmul pass
                        (forward, input and weight gradients) with the variant that runs it on this
                        adapter and its source (default, autotune: a cached winner, override)
  --batch N             batch of that step (default 64)
  --force SPEC          plan override, e.g. "conv=tiled" (default: $CONVNEXT_PLAN)
  --no-autotune         ignore cached autotune winners (also CONVNEXT_AUTOTUNE=0)
  -h, --help`;

function intList(flag: string, v: string | undefined): number[] | undefined {
  if (v === undefined) return undefined;
  const xs = v.split(",").map((s) => Number(s.trim()));
  if (!xs.length || !xs.every((x) => Number.isInteger(x) && x > 0)) {
    throw new Error(`--${flag} expects comma-separated positive integers, got "${v}"`);
  }
  return xs;
}

function int(flag: string, v: string | undefined): number | undefined {
  return intList(flag, v)?.[0];
}

export interface ModelInfo {
  stage: string;
  config: ModelConfig;
  parameters: number;
  flops: number;
  imageSize: number;
  layers: { name: string; type: string; outShape: number[]; params: number; flops: number }[];
}

/** Parameters, FLOPs and the per-layer table of `stage` with `opts` (no GPU needed). */
export function modelInfo(stage: string, opts: ModelOptions = {}, imageSize = 32): ModelInfo {
  const model = onMeta(() => buildModel(stage, opts));
  const rows = model.summary([1, model.config.inChannels, imageSize, imageSize]);
  return {
    stage: model.stage,
    config: model.config,
    parameters: model.numParameters(),
    flops: rows.reduce((a, r) => a + r.flops, 0),
    imageSize,
    layers: rows.map((r) => ({
      name: r.name,
      type: r.type,
      outShape: r.outShape.slice(1),
      params: r.params,
      flops: r.flops,
    })),
  };
}

function formatTable(info: ModelInfo): string {
  const head = ["layer", "type", "output (C×H×W)", "params", "MFLOPs"];
  const body = info.layers.map((l) => [
    l.name,
    l.type,
    l.outShape.join("×"),
    l.params ? l.params.toLocaleString("en-US") : "",
    l.flops ? (l.flops / 1e6).toFixed(3) : "",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i >= 3 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ").trimEnd();
  const c = info.config;
  return [
    `${info.stage}: widths ${c.widths.join(",")}, depths ${c.depths.join(",")}, stem ${c.stemFeatures}, ` +
    `${c.numClasses} classes, ${c.softmaxHead ? "softmax" : "logits"} head`,
    "",
    line(head),
    line(widths.map((w) => "-".repeat(w))),
    ...body.map(line),
    "",
    `parameters: ${info.parameters.toLocaleString("en-US")}`,
    `forward FLOPs per ${info.imageSize}×${info.imageSize} image: ${(info.flops / 1e6).toFixed(1)} M ` +
    `(${info.flops.toLocaleString("en-US")}; 2 × multiply-adds of conv and linear layers)`,
  ].join("\n");
}

export async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        stage: { type: "string" },
        json: { type: "boolean", default: false },
        widths: { type: "string" },
        depths: { type: "string" },
        "stem-features": { type: "string" },
        "num-classes": { type: "string" },
        "image-size": { type: "string" },
        plan: { type: "boolean", default: false },
        batch: { type: "string" },
        force: { type: "string" },
        "no-autotune": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    console.error(`info: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.stage) {
    console.error(`info: --stage is required. Valid stages: ${STAGES.join(", ")}\n\n${USAGE}`);
    return 2;
  }
  try {
    const opts: ModelOptions = {
      widths: intList("widths", values.widths),
      depths: intList("depths", values.depths),
      stemFeatures: int("stem-features", values["stem-features"]),
      numClasses: int("num-classes", values["num-classes"]),
    };
    const imageSize = int("image-size", values["image-size"]) ?? 32;
    const info = modelInfo(values.stage, opts, imageSize);
    let plan: PlanEntry[] | null = null, adapter = "";
    if (values.plan) {
      // the plan depends on the adapter; without one it is the plan for a GPU-class adapter
      const ctx = await initGPU().catch(() => null);
      adapter = ctx ? ctx.adapterName : "none found (the plan a GPU-class adapter would get)";
      if (ctx) {
        applyKernelSettings(ctx, { plan: values.force, autotune: values["no-autotune"] ? false : undefined });
      }
      plan = trainingStepPlan(values.stage, opts, int("batch", values.batch) ?? 64, imageSize);
    }
    if (values.json) console.log(JSON.stringify(plan ? { ...info, adapter, plan } : info));
    else {
      console.log(formatTable(info));
      if (plan) {
        console.log(
          `\nkernel plan of one training step at batch ${
            int("batch", values.batch) ?? 64
          } (adapter: ${adapter}):\n${formatPlan(plan)}`,
        );
      }
    }
    return 0;
  } catch (e) {
    console.error(`info: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
