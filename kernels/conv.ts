// 2-D convolution kernels (NCHW input, OIHW weight, zero padding, square kernels). `convForward`,
// `convBackwardInput` and `convBackwardWeight` run the variant the planner (kernels/planner.ts) picks,
// or the one they are given:
//   * gemm1x1/*: 1×1 stride 1 without padding or groups, as GEMMs (kernels/conv1x1.ts);
//   * depthwise/* (groups = C = O): kernels/depthwise.ts and kernels/depthwise_tiled.ts;
//   * direct/blocked, everything else (dense or grouped k×k, stems): the kernels below, where each
//     invocation keeps a block of channels × pixels of the result in registers.
// (`patches` is a rewrite of the graph, done by autograd/ops/conv.ts.)

import { type Binding, dispatch, kernel, params } from "./runtime.ts";
import { sumAxes } from "./reduce.ts";
import { paramsDecl, storageDecls } from "./wgsl.ts";
import { ANY_BATCH, NOMINAL_BATCH } from "./batch_class.ts";
import {
  type Axis,
  blockEdge,
  convGrid,
  type ConvShape,
  forwardAxis,
  guarded,
  parityAxis,
  range,
  specKey,
  splitReduction,
  wgc,
  withPartials,
} from "./conv_common.ts";
import { convKey } from "./shapes.ts";
import { fusionEnabled } from "./fusions.ts";
import { planConvIn } from "./plan_core.ts";
import { PATCH_VARIANTS } from "./patches.ts";
import { GEMM1X1_VARIANTS } from "./conv1x1.ts";
import { DEPTHWISE_VARIANTS } from "./depthwise.ts";
import {
  CONV_PASSES,
  type ConvBindings,
  type ConvPass,
  convTuneKey,
  type ConvVariant,
  isDepthwise,
  isPointwise,
  lookup,
} from "./variant.ts";
import { adapterProfile } from "./profile.ts";

export { convOutSize, type ConvShape } from "./conv_common.ts";

/**
 * Every convolution variant: the family tables in the order candidates are listed (read at each call:
 * a table may grow, e.g. in a test).
 */
export function convTable(): ConvVariant[] {
  return [...PATCH_VARIANTS, ...GEMM1X1_VARIANTS, ...DEPTHWISE_VARIANTS, ...DIRECT_VARIANTS];
}

const planConv = (s: ConvShape, pass: ConvPass) => planConvIn(convTable(), s, pass);
const variantOf = (name: string) => lookup(convTable(), name, "conv");

/** Runs pass `b.pass` of `s` by `variant` (the table entry's `run`), after checking it applies. */
function runConv(variant: string, b: ConvBindings, s: ConvShape): void {
  const v = variantOf(variant);
  if (!v.passes.includes(b.pass)) {
    throw new Error(`conv ${b.pass}: variant "${variant}" does not run this pass`);
  }
  v.run(b, s);
}

/**
 * Blocks per image whose statistics forward `variant` can write beside y (depthwise/direct:
 * kernels/depthwise.ts depthwiseForwardParts), else 0.
 */
export function convForwardParts(s: ConvShape, variant: string): number {
  return variantOf(variant).statsParts?.(s) ?? 0;
}

/**
 * y = conv(x, w) + b; with `parts` (a variant where convForwardParts > 0) also the count, mean and
 * sum of squared deviations of each output block, for normStatsFromParts (kernels/norm.ts).
 */
export function convForward(
  x: Binding,
  w: Binding,
  b: Binding | null,
  y: Binding,
  s: ConvShape,
  variant = planConv(s, "forward").variant,
  parts: Binding | null = null,
): void {
  if (s.n * s.o * s.oh * s.ow === 0) return;
  if (parts && !convForwardParts(s, variant)) {
    throw new Error(`conv forward with statistics: variant "${variant}" does not write them`);
  }
  runConv(variant, { pass: "forward", x, w, b, y, parts }, s);
}

/** dx from dy. */
export function convBackwardInput(
  dy: Binding,
  w: Binding,
  dx: Binding,
  s: ConvShape,
  variant = planConv(s, "inputGrad").variant,
): void {
  if (s.n * s.c * s.h * s.w === 0) return;
  runConv(variant, { pass: "inputGrad", dy, w, dx }, s);
}

/**
 * dw from dy and x; with `db`, also the bias gradient Σ dy: inside the weight-gradient kernel where
 * the variant sums it and the "weight-grad-bias" fusion is on, else by a reduction pass after it.
 */
export function convBackwardWeight(
  dy: Binding,
  x: Binding,
  dw: Binding,
  s: ConvShape,
  variant = planConv(s, "weightGrad").variant,
  db: Binding | null = null,
): void {
  const fused = !!db && !!variantOf(variant).biasGrad && fusionEnabled("weight-grad-bias");
  runConv(variant, { pass: "weightGrad", dy, x, dw, db: fused ? db : null }, s);
  if (db && !fused) convBackwardBias(dy, db, s);
}

/** db = Σ_{n,oh,ow} dy. */
export function convBackwardBias(dy: Binding, db: Binding, s: ConvShape): void {
  sumAxes(dy, [s.n, s.o, s.oh * s.ow], [0, 2], db);
}

// ---------------------------------------------------------------- direct kernels

// Division and remainder of i32s by a constant, folded when the constant is 1 (Chromium's SwiftShader
// never finishes compiling a loop that divides by a literal 1).
const div = (a: string, n: number) => n === 1 ? a : `(${a} / ${n})`;
const mod = (a: string, n: number) => n === 1 ? "0" : `(${a} % ${n})`;

/** Channels of a direct pass: input `cin`, output `cout`, in `groups` groups, over a batch of `n`. */
interface Channels {
  n: number;
  cin: number;
  cout: number;
  groups: number;
}

/**
 * A direct convolution pass out = conv(inp, weights) (+ bias). Each invocation computes RB output
 * channels (of one group) × RH output rows × PX output columns; per input channel and row tap it
 * loads the RH input row segments once and reuses each loaded value for up to RB·(column taps)
 * multiply-adds. `widx(g, ol, il, u, v)` is the WGSL flat weight index joining output channel `ol`
 * and input channel `il` (local to group `g`) at row tap `u` (a WGSL expression) and column tap `v`.
 */
function directConv(
  name: string,
  inp: Binding,
  wgt: Binding,
  bias: Binding | null,
  out: Binding,
  ch: Channels,
  rows: Axis,
  cols: Axis,
  widx: (g: string, ol: string, il: string, u: string, v: number) => string,
  widxKey: string,
): void {
  const { n, cin, cout, groups } = ch;
  const h = rows.inSize, W = cols.inSize;
  const cig = cin / groups, cog = cout / groups;
  const rb = blockEdge(cog);
  const pixels = adapterProfile().directPixels;
  const px = Math.min(pixels, cols.outSub), rh = Math.min(rows.outSub, Math.max(1, Math.floor(pixels / px)));
  const ocBlocks = Math.ceil(cog / rb), rowBlocks = Math.ceil(rows.outSub / rh);
  const colBlocks = Math.ceil(cols.outSub / px);
  const total = groups * ocBlocks * rowBlocks * colBlocks;
  const minV = Math.min(0, cols.step * (cols.taps - 1));
  const seg = cols.taps > 0 ? (px - 1) * cols.stride + cols.taps : 0;
  const segIdx = (j: number, v: number) => j * cols.stride + cols.step * v - minV;
  const { groups: grid, index } = convGrid(total, n);
  // the batch is the grid's z: the key and the source leave it out
  const key = specKey(
    name,
    { ...ch, n: ANY_BATCH },
    rows,
    cols,
    !!bias,
    widxKey,
    rb,
    px,
    rh,
    grid.slice(0, 2),
  );
  const pipe = kernel(key, "direct/blocked", () => {
    const I = range(rb), R = range(rh), J = range(px), M = range(seg), V = range(cols.taps);
    const loop = rows.taps > 0 && cols.taps > 0
      ? `  let xg = (nn * ${cin} + g * ${cig}) * ${h * W};
  for (var ci = 0; ci < ${cig}; ci++) {
    let xc = xg + ci * ${h * W} + iwb;
    for (var u = 0; u < ${rows.taps}; u++) {
${
        R.map((q) =>
          `      let ih${q} = (oh0 + ${q}) * ${rows.stride} + ${rows.off} + ${rows.step} * u;\n` +
          `      let rv${q} = ih${q} >= 0 && ih${q} < ${h};\n` +
          `      let row${q} = xc + ih${q} * ${W};\n` +
          M.map((m) => `      let s${q}_${m} = ${guarded("x", `row${q} + ${m}`, `rv${q} && cv${m}`)};`).join(
            "\n",
          )
        ).join("\n")
      }
${
        V.map((v) =>
          I.map((i) => `      let w${v}_${i} = w[${widx("g", `ol${i}`, "ci", "u", v)}];`).join("\n") + "\n" +
          I.map((i) =>
            R.map((q) =>
              J.map((j) => `      a${i}_${q}_${j} += s${q}_${segIdx(j, v)} * w${v}_${i};`).join("\n")
            )
              .join("\n")
          ).join("\n")
        ).join("\n")
      }
    }
  }`
      // no taps reach these outputs (they are zero); the never-taken branch keeps every binding in the layout
      : "  if (t < 0) { y[0] = x[0] + w[0]; }";
    return `${storageDecls(bias ? ["x", "w", "b"] : ["x", "w"], ["y"])}
@compute @workgroup_size(${wgc()})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let nn = i32(gid.z);
  let ow0 = ${mod("t", colBlocks)} * ${px};
  var r = ${div("t", colBlocks)};
  let oh0 = ${mod("r", rowBlocks)} * ${rh};
  r = ${div("r", rowBlocks)};
  let o0 = ${mod("r", ocBlocks)} * ${rb};
  let g = ${div("r", ocBlocks)};
${I.map((i) => `  let ol${i} = min(o0 + ${i}, ${cog - 1});`).join("\n")}
  let iwb = ow0 * ${cols.stride} + ${cols.off + minV};
${M.map((m) => `  let cv${m} = iwb + ${m} >= 0 && iwb + ${m} < ${W};`).join("\n")}
${I.map((i) => R.map((q) => J.map((j) => `  var a${i}_${q}_${j} = 0.0;`).join("\n")).join("\n")).join("\n")}
${loop}
${
      I.map((i) =>
        R.map((q) =>
          J.map((j) =>
            `  if (o0 + ${i} < ${cog} && oh0 + ${q} < ${rows.outSub} && ow0 + ${j} < ${cols.outSub}) { y[((nn * ${cout} + g * ${cog} + ol${i}) * ${rows.outFull} + ${rows.outA} + ${rows.outS} * (oh0 + ${q})) * ${cols.outFull} + ${cols.outA} + ${cols.outS} * (ow0 + ${j})] = a${i}_${q}_${j}${
              bias ? ` + b[g * ${cog} + ol${i}]` : ""
            }; }`
          ).join("\n")
        ).join("\n")
      ).join("\n")
    }
}`;
  });
  dispatch(pipe, bias ? [inp, wgt, bias, out] : [inp, wgt, out], grid);
}

/** Forward of a dense or grouped convolution. */
function directForward(x: Binding, w: Binding, b: Binding | null, y: Binding, s: ConvShape): void {
  const { k, stride, pad } = s, cg = s.c / s.groups, og = s.o / s.groups;
  directConv(
    "conv_forward",
    x,
    w,
    b,
    y,
    { n: s.n, cin: s.c, cout: s.o, groups: s.groups },
    forwardAxis(s.h, s.oh, k, stride, pad),
    forwardAxis(s.w, s.ow, k, stride, pad),
    (g, ol, il, u, v) => `((${g} * ${og} + ${ol}) * ${cg} + ${il}) * ${k * k} + ${u} * ${k} + ${v}`,
    `f${og},${cg},${k}`,
  );
}

/**
 * Input gradient, split by the position of the input pixel modulo the stride: for input positions
 * a + s·i only the kernel taps kh ≡ a + p (mod s) contribute, each from output position i + const,
 * so every class is a stride-1 convolution of dy with a sub-filter (one class when s = 1).
 */
function directBackwardInput(dy: Binding, w: Binding, dx: Binding, s: ConvShape): void {
  const { k, stride, pad } = s, cg = s.c / s.groups, og = s.o / s.groups;
  for (let a = 0; a < stride; a++) {
    for (let b = 0; b < stride; b++) {
      const rows = parityAxis(s.h, s.oh, a, k, stride, pad), cols = parityAxis(s.w, s.ow, b, k, stride, pad);
      if (rows.axis.outSub <= 0 || cols.axis.outSub <= 0) continue;
      directConv(
        "conv_backward_input",
        dy,
        w,
        null,
        dx,
        { n: s.n, cin: s.o, cout: s.c, groups: s.groups },
        rows.axis,
        cols.axis,
        (g, ol, il, u, v) =>
          `((${g} * ${og} + ${il}) * ${cg} + ${ol}) * ${k * k} + (${rows.t0} + ${stride} * ${u}) * ${k} + ${
            cols.t0 + stride * v
          }`,
        `b${og},${cg},${k},${stride},${rows.t0},${cols.t0}`,
      );
    }
  }
}

/**
 * Weight gradient: RB output channels × 4 input channels (of one group) × one kernel row (all k
 * columns) per invocation, reduced over a chunk of the N·OH output rows in runs of 4 output columns
 * (each loaded dy value feeds 4·k multiply-adds, each loaded x value up to RB·k); the chunks are
 * summed in a second pass.
 */
function directBackwardWeight(dy: Binding, x: Binding, dw: Binding, s: ConvShape): void {
  const { n, c, h, w: W, o, k, stride, pad, groups, oh: OH, ow: OW } = s;
  const cg = c / groups, og = o / groups, P = OH * OW, HW = h * W, kk = k * k;
  const wb = adapterProfile().directWeightBlock;
  const rb = blockEdge(og), cb = wb.inChannels, px = Math.min(wb.cols, OW);
  const ocBlocks = Math.ceil(og / rb), icBlocks = Math.ceil(cg / cb), owBlocks = Math.ceil(OW / px);
  const total = groups * ocBlocks * icBlocks * k;
  const rows = n * OH;
  const outputs = o * cg * kk;
  // the chunks over the images' rows as for the nominal batch; their length (and the rows) from P
  const chunks = splitReduction(NOMINAL_BATCH * OH, outputs, Math.ceil(128 / OW)).chunks;
  const len = Math.ceil(rows / chunks);
  const { groups: grid, index } = convGrid(total, chunks);
  const seg = (px - 1) * stride + k;
  const key = specKey("conv_backward_weight", convKey({ ...s, n: ANY_BATCH }), rb, cb, px, chunks, grid);
  const pipe = kernel(key, "direct/blocked", () => {
    const I = range(rb), C = range(cb), J = range(px), M = range(seg), KW = range(k);
    const dyLoad = (i: number, j: number) =>
      OW % px === 0 ? `dy[dp + dc${i} + ${j}]` : guarded("dy", `dp + dc${i} + ${j}`, `ow0 + ${j} < ${OW}`);
    return `${storageDecls(["dy", "x"], ["out"])}
${paramsDecl(3, ["rows", "len"])}
@compute @workgroup_size(${wgc()})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let chunk = i32(gid.z);
  let kh = ${mod("t", k)};
  var r = ${div("t", k)};
  let c0 = ${mod("r", icBlocks)} * ${cb};
  r = ${div("r", icBlocks)};
  let o0 = ${mod("r", ocBlocks)} * ${rb};
  let g = ${div("r", ocBlocks)};
${I.map((i) => `  let dc${i} = (g * ${og} + min(o0 + ${i}, ${og - 1})) * ${P};`).join("\n")}
${C.map((q) => `  let xc${q} = (g * ${cg} + min(c0 + ${q}, ${cg - 1})) * ${HW};`).join("\n")}
${
      I.map((i) => C.map((q) => KW.map((kw) => `  var a${i}_${q}_${kw} = 0.0;`).join("\n")).join("\n")).join(
        "\n",
      )
    }
  let start = chunk * i32(P.len);
  let end = min(start + i32(P.len), i32(P.rows));
  for (var rr = start; rr < end; rr++) {
    let nn = ${div("rr", OH)};
    let oh = ${mod("rr", OH)};
    let ih = oh * ${stride} - ${pad} + kh;
    if (ih < 0 || ih >= ${h}) { continue; }
    let xrow = nn * ${c * HW} + ih * ${W};
    let dyrow = nn * ${o * P} + oh * ${OW};
    for (var ob = 0; ob < ${owBlocks}; ob++) {
      let ow0 = ob * ${px};
      let iwb = ow0 * ${stride} - ${pad};
      let dp = dyrow + ow0;
      let xp = xrow + iwb;
${M.map((m) => `      let cv${m} = iwb + ${m} >= 0 && iwb + ${m} < ${W};`).join("\n")}
${I.map((i) => J.map((j) => `      let d${i}_${j} = ${dyLoad(i, j)};`).join("\n")).join("\n")}
${
      C.map((q) =>
        M.map((m) => `      let s${q}_${m} = ${guarded("x", `xp + xc${q} + ${m}`, `cv${m}`)};`).join("\n") +
        "\n" +
        I.map((i) =>
          KW.map((kw) =>
            `      a${i}_${q}_${kw} += ${J.map((j) => `d${i}_${j} * s${q}_${j * stride + kw}`).join(" + ")};`
          ).join("\n")
        ).join("\n")
      ).join("\n")
    }
    }
  }
  let base = chunk * ${outputs};
${
      I.map((i) =>
        C.map((q) =>
          `  if (o0 + ${i} < ${og} && c0 + ${q} < ${cg}) {\n` +
          `    let wo = base + ((g * ${og} + o0 + ${i}) * ${cg} + c0 + ${q}) * ${kk} + kh * ${k};\n` +
          KW.map((kw) => `    out[wo + ${kw}] = a${i}_${q}_${kw};`).join("\n") + "\n  }"
        ).join("\n")
      ).join("\n")
    }
}`;
  });
  withPartials(chunks, outputs, dw, (dst) => dispatch(pipe, [dy, x, dst, params(rows, len)], grid));
}

// ---------------------------------------------------------------- the variants

/** The direct family: everything neither a 1×1 GEMM nor depthwise runs (dense or grouped k×k, stems). */
export const DIRECT_VARIANTS: ConvVariant[] = [
  {
    name: "direct/blocked",
    passes: CONV_PASSES,
    applies: (s) => !isPointwise(s) && !isDepthwise(s),
    rank: () => 10,
    run: (b, s) => {
      if (b.pass === "forward") directForward(b.x, b.w, b.b, b.y, s);
      else if (b.pass === "inputGrad") directBackwardInput(b.dy, b.w, b.dx, s);
      else directBackwardWeight(b.dy, b.x, b.dw, s);
    },
    tuneKey: convTuneKey,
  },
];
