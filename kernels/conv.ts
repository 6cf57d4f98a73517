// 2-D convolution kernels (NCHW input, OIHW weight, zero padding, square kernels). `convForward`,
// `convBackwardInput`, `convBackwardWeight` and `convBackwardBias` pick the kernel family:
//   * 1×1 stride 1 without padding or groups: batched GEMMs (kernels/conv1x1.ts);
//   * depthwise (groups = C = O): its own family (kernels/depthwise.ts);
//   * everything else (dense or grouped k×k, 1×1 stride 2, 2×2 stride 2, stems): the direct kernels
//     below, where each invocation keeps a block of channels × pixels of the result in registers.

import { type Binding, dispatch, pipeline } from "./runtime.ts";
import { sumAxes } from "./reduce.ts";
import { storageDecls } from "./wgsl.ts";
import {
  blockEdge,
  convGrid,
  type ConvShape,
  guarded,
  range,
  splitReduction,
  WGC,
  withPartials,
} from "./conv_common.ts";
import { conv1x1BackwardInput, conv1x1BackwardWeight, conv1x1Forward } from "./conv1x1.ts";
import { depthwiseBackwardInput, depthwiseBackwardWeight, depthwiseForward } from "./depthwise.ts";

export { convOutSize, type ConvShape } from "./conv_common.ts";

export type ConvKind = "gemm1x1" | "depthwise" | "direct";

/** The kernel family used for a convolution of shape `s`. */
export function convKind(s: ConvShape): ConvKind {
  if (s.k === 1 && s.stride === 1 && s.pad === 0 && s.groups === 1) return "gemm1x1";
  if (s.groups === s.c && s.o === s.c && s.c > 1) return "depthwise";
  return "direct";
}

const R4 = [0, 1, 2, 3];

/** y = conv(x, w) + b. */
export function convForward(x: Binding, w: Binding, b: Binding | null, y: Binding, s: ConvShape): void {
  if (s.n * s.o * s.oh * s.ow === 0) return;
  const kind = convKind(s);
  if (kind === "gemm1x1") return conv1x1Forward(x, w, b, y, s);
  if (kind === "depthwise") return depthwiseForward(x, w, b, y, s);
  directForward(x, w, b, y, s);
}

/** dx from dy. */
export function convBackwardInput(dy: Binding, w: Binding, dx: Binding, s: ConvShape): void {
  if (s.n * s.c * s.h * s.w === 0) return;
  const kind = convKind(s);
  if (kind === "gemm1x1") return conv1x1BackwardInput(dy, w, dx, s);
  if (kind === "depthwise") return depthwiseBackwardInput(dy, w, dx, s);
  if (s.stride === 1 && s.pad <= s.k - 1) return directBackwardInputStride1(dy, w, dx, s);
  directBackwardInput(dy, w, dx, s);
}

/** dw from dy and x. */
export function convBackwardWeight(dy: Binding, x: Binding, dw: Binding, s: ConvShape): void {
  const kind = convKind(s);
  if (kind === "gemm1x1") return conv1x1BackwardWeight(dy, x, dw, s);
  if (kind === "depthwise") return depthwiseBackwardWeight(dy, x, dw, s);
  directBackwardWeight(dy, x, dw, s);
}

/** db = Σ_{n,oh,ow} dy. */
export function convBackwardBias(dy: Binding, db: Binding, s: ConvShape): void {
  sumAxes(dy, [s.n, s.o, s.oh * s.ow], [0, 2], db);
}

// ---------------------------------------------------------------- direct kernels

/** Sizes of a direct convolution pass: input `cin`×`h`×`w`, output `cout`×`oh`×`ow`. */
interface DirectDims {
  n: number;
  cin: number;
  h: number;
  w: number;
  cout: number;
  oh: number;
  ow: number;
  k: number;
  stride: number;
  pad: number;
  groups: number;
}

/**
 * A direct convolution out = conv(inp, weights) (+ bias). Each invocation computes RB output
 * channels (of one group) × RH output rows × PX output columns; per input channel and kernel row it
 * loads the RH input row segments once and reuses each loaded value for RB·K multiply-adds.
 * `widx(g, ol, il, kh, kw)` is the WGSL flat index of the weight joining output channel `ol` and
 * input channel `il` (both local to group `g`) at tap (kh, kw); kw is a constant.
 */
function directConv(
  name: string,
  inp: Binding,
  wgt: Binding,
  bias: Binding | null,
  out: Binding,
  d: DirectDims,
  widx: (g: string, ol: string, il: string, kh: string, kw: number) => string,
): void {
  const { n, cin, h, w: W, cout, oh: OH, ow: OW, k, stride, pad, groups } = d;
  const cig = cin / groups, cog = cout / groups;
  const rb = blockEdge(cog);
  const px = Math.min(8, OW), rh = Math.min(OH, Math.max(1, Math.floor(8 / px)));
  const ocBlocks = Math.ceil(cog / rb), rowBlocks = Math.ceil(OH / rh), colBlocks = Math.ceil(OW / px);
  const total = groups * ocBlocks * rowBlocks * colBlocks;
  const seg = (px - 1) * stride + k;
  const { groups: grid, index } = convGrid(total, n);
  const I = range(rb), R = range(rh), J = range(px), M = range(seg);
  const wgsl = `${storageDecls(bias ? ["x", "w", "b"] : ["x", "w"], ["y"])}
@compute @workgroup_size(${WGC})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let nn = i32(gid.z);
  let ow0 = (t % ${colBlocks}) * ${px};
  var r = t / ${colBlocks};
  let oh0 = (r % ${rowBlocks}) * ${rh};
  r = r / ${rowBlocks};
  let o0 = (r % ${ocBlocks}) * ${rb};
  let g = r / ${ocBlocks};
${I.map((i) => `  let ol${i} = min(o0 + ${i}, ${cog - 1});`).join("\n")}
  let iwb = ow0 * ${stride} - ${pad};
${M.map((m) => `  let cv${m} = iwb + ${m} >= 0 && iwb + ${m} < ${W};`).join("\n")}
${I.map((i) => R.map((q) => J.map((j) => `  var a${i}_${q}_${j} = 0.0;`).join("\n")).join("\n")).join("\n")}
  let xg = (nn * ${cin} + g * ${cig}) * ${h * W};
  for (var ci = 0; ci < ${cig}; ci++) {
    let xc = xg + ci * ${h * W} + iwb;
    for (var kh = 0; kh < ${k}; kh++) {
${
    R.map((q) =>
      `      let ih${q} = (oh0 + ${q}) * ${stride} - ${pad} + kh;\n      let rv${q} = ih${q} >= 0 && ih${q} < ${h};\n` +
      `      let row${q} = xc + ih${q} * ${W};\n` +
      M.map((m) => `      let s${q}_${m} = ${guarded("x", `row${q} + ${m}`, `rv${q} && cv${m}`)};`).join("\n")
    ).join("\n")
  }
${
    range(k).map((kw) =>
      I.map((i) => `      let w${kw}_${i} = w[${widx("g", `ol${i}`, "ci", "kh", kw)}];`).join("\n") + "\n" +
      I.map((i) =>
        R.map((q) =>
          J.map((j) => `      a${i}_${q}_${j} += s${q}_${j * stride + kw} * w${kw}_${i};`).join("\n")
        ).join(
          "\n",
        )
      ).join("\n")
    ).join("\n")
  }
    }
  }
${
    I.map((i) =>
      R.map((q) =>
        J.map((j) =>
          `  if (o0 + ${i} < ${cog} && oh0 + ${q} < ${OH} && ow0 + ${j} < ${OW}) { y[((nn * ${cout} + g * ${cog} + ol${i}) * ${OH} + oh0 + ${q}) * ${OW} + ow0 + ${j}] = a${i}_${q}_${j}${
            bias ? ` + b[g * ${cog} + ol${i}]` : ""
          }; }`
        ).join("\n")
      ).join("\n")
    ).join("\n")
  }
}`;
  dispatch(pipeline(name, wgsl), bias ? [inp, wgt, bias, out] : [inp, wgt, out], grid);
}

/** Forward of a dense or grouped convolution. */
function directForward(x: Binding, w: Binding, b: Binding | null, y: Binding, s: ConvShape): void {
  const { k } = s, cg = s.c / s.groups;
  directConv(
    "conv_forward",
    x,
    w,
    b,
    y,
    {
      n: s.n,
      cin: s.c,
      h: s.h,
      w: s.w,
      cout: s.o,
      oh: s.oh,
      ow: s.ow,
      k,
      stride: s.stride,
      pad: s.pad,
      groups: s.groups,
    },
    (g, ol, il, kh, kw) =>
      `((${g} * ${s.o / s.groups} + ${ol}) * ${cg} + ${il}) * ${k * k} + ${kh} * ${k} + ${kw}`,
  );
}

/**
 * Input gradient of a stride-1 convolution as a forward convolution of dy with the flipped,
 * transposed weights and padding k−1−p.
 */
function directBackwardInputStride1(dy: Binding, w: Binding, dx: Binding, s: ConvShape): void {
  const { k } = s, cg = s.c / s.groups, og = s.o / s.groups;
  directConv(
    "conv_backward_input_s1",
    dy,
    w,
    null,
    dx,
    {
      n: s.n,
      cin: s.o,
      h: s.oh,
      w: s.ow,
      cout: s.c,
      oh: s.h,
      ow: s.w,
      k,
      stride: 1,
      pad: k - 1 - s.pad,
      groups: s.groups,
    },
    (g, ol, il, kh, kw) =>
      `((${g} * ${og} + ${il}) * ${cg} + ${ol}) * ${k * k} + (${k - 1} - ${kh}) * ${k} + ${k - 1 - kw}`,
  );
}

/** Input gradient (any stride): 4 input channels (of one group) × 4 input pixels per invocation. */
function directBackwardInput(dy: Binding, w: Binding, dx: Binding, s: ConvShape): void {
  const { n, c, h, w: W, o, k, stride, pad, groups, oh: OH, ow: OW } = s;
  const cg = c / groups, og = o / groups, P = OH * OW, HW = h * W, kk = k * k;
  const icBlocks = Math.ceil(cg / 4), pxBlocks = Math.ceil(HW / 4);
  const total = groups * icBlocks * pxBlocks;
  const { groups: grid, index } = convGrid(total, n);
  const valid = (i: number) =>
    stride === 1
      ? `th${i} >= 0 && th${i} < ${OH} && tw${i} >= 0 && tw${i} < ${OW}`
      : `th${i} >= 0 && tw${i} >= 0 && th${i} % ${stride} == 0 && tw${i} % ${stride} == 0 && th${i} < ${
        OH * stride
      } && tw${i} < ${OW * stride}`;
  const idx = (i: number) =>
    stride === 1
      ? `dyc + th${i} * ${OW} + tw${i}`
      : `dyc + (th${i} / ${stride}) * ${OW} + tw${i} / ${stride}`;
  const wgsl = `${storageDecls(["dy", "w"], ["dx"])}
@compute @workgroup_size(${WGC})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let nn = i32(gid.z);
  let p0 = (t % ${pxBlocks}) * 4;
  let cb = t / ${pxBlocks};
  let g = cb / ${icBlocks};
  let c0 = (cb % ${icBlocks}) * 4;
${R4.map((j) => `  let ci${j} = min(c0 + ${j}, ${cg - 1});`).join("\n")}
${
    R4.map((i) =>
      `  let q${i} = min(p0 + ${i}, ${
        HW - 1
      });\n  let hb${i} = q${i} / ${W} + ${pad};\n  let wb${i} = q${i} % ${W} + ${pad};`
    ).join("\n")
  }
${R4.map((i) => `  var a${i} = vec4<f32>(0.0);`).join("\n")}
  for (var oc = g * ${og}; oc < (g + 1) * ${og}; oc++) {
    let dyc = (nn * ${o} + oc) * ${P};
${R4.map((j) => `    let wo${j} = (oc * ${cg} + ci${j}) * ${kk};`).join("\n")}
    for (var kh = 0; kh < ${k}; kh++) {
${R4.map((i) => `      let th${i} = hb${i} - kh;`).join("\n")}
      for (var kw = 0; kw < ${k}; kw++) {
        let kx = kh * ${k} + kw;
        let wv = vec4<f32>(${R4.map((j) => `w[wo${j} + kx]`).join(", ")});
${
    R4.map((i) =>
      `        let tw${i} = wb${i} - kw;\n        let v${i} = ${valid(i)};\n        a${i} += ${
        guarded("dy", idx(i), `v${i}`)
      } * wv;`
    ).join("\n")
  }
      }
    }
  }
  let xg = (nn * ${c} + g * ${cg}) * ${HW};
${
    R4.map((i) =>
      R4.map((j) =>
        `  if (p0 + ${i} < ${HW} && c0 + ${j} < ${cg}) { dx[xg + ci${j} * ${HW} + q${i}] = a${i}[${j}]; }`
      ).join("\n")
    ).join("\n")
  }
}`;
  dispatch(pipeline("conv_backward_input", wgsl), [dy, w, dx], grid);
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
  const rb = blockEdge(og), cb = 4, px = Math.min(4, OW);
  const ocBlocks = Math.ceil(og / rb), icBlocks = Math.ceil(cg / cb), owBlocks = Math.ceil(OW / px);
  const total = groups * ocBlocks * icBlocks * k;
  const rows = n * OH;
  const outputs = o * cg * kk;
  const { chunks, len } = splitReduction(rows, outputs, Math.ceil(128 / OW));
  const { groups: grid, index } = convGrid(total, chunks);
  const seg = (px - 1) * stride + k;
  const I = range(rb), C = range(cb), J = range(px), M = range(seg), KW = range(k);
  const dyLoad = (i: number, j: number) =>
    OW % px === 0 ? `dy[dp + dc${i} + ${j}]` : guarded("dy", `dp + dc${i} + ${j}`, `ow0 + ${j} < ${OW}`);
  const wgsl = `${storageDecls(["dy", "x"], ["out"])}
@compute @workgroup_size(${WGC})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let chunk = i32(gid.z);
  let kh = t % ${k};
  var r = t / ${k};
  let c0 = (r % ${icBlocks}) * ${cb};
  r = r / ${icBlocks};
  let o0 = (r % ${ocBlocks}) * ${rb};
  let g = r / ${ocBlocks};
${I.map((i) => `  let dc${i} = (g * ${og} + min(o0 + ${i}, ${og - 1})) * ${P};`).join("\n")}
${C.map((q) => `  let xc${q} = (g * ${cg} + min(c0 + ${q}, ${cg - 1})) * ${HW};`).join("\n")}
${
    I.map((i) => C.map((q) => KW.map((kw) => `  var a${i}_${q}_${kw} = 0.0;`).join("\n")).join("\n")).join(
      "\n",
    )
  }
  let start = chunk * ${len};
  let end = min(start + ${len}, ${rows});
  for (var rr = start; rr < end; rr++) {
    let nn = rr / ${OH};
    let oh = rr % ${OH};
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
  withPartials(
    chunks,
    outputs,
    dw,
    (dst) => dispatch(pipeline("conv_backward_weight", wgsl), [dy, x, dst], grid),
  );
}
