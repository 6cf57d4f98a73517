// 2-D convolution kernels (NCHW input, OIHW weight, zero padding, square kernels). `convForward`,
// `convBackwardInput`, `convBackwardWeight` and `convBackwardBias` pick the kernel family:
//   * 1×1 stride 1 without padding or groups: batched GEMMs (kernels/conv1x1.ts);
//   * depthwise (groups = C = O): its own family (kernels/depthwise.ts);
//   * everything else (dense or grouped k×k, 1×1 stride 2, 2×2 stride 2, stems): the direct kernels
//     below, where each invocation keeps 4 channels × 4 pixels of the result in registers.

import { type Binding, dispatch, pipeline } from "./runtime.ts";
import { sumAxes } from "./reduce.ts";
import { storageDecls } from "./wgsl.ts";
import { convGrid, type ConvShape, guarded, splitReduction, WGC, withPartials } from "./conv_common.ts";
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

/** Forward: 4 output channels (of one group) × 4 output pixels per invocation. */
function directForward(x: Binding, w: Binding, b: Binding | null, y: Binding, s: ConvShape): void {
  const { n, c, h, w: W, o, k, stride, pad, groups, oh: OH, ow: OW } = s;
  const cg = c / groups, og = o / groups, P = OH * OW, kk = k * k;
  const ocBlocks = Math.ceil(og / 4), pxBlocks = Math.ceil(P / 4);
  const total = groups * ocBlocks * pxBlocks;
  const { groups: grid, index } = convGrid(total, n);
  const load = (i: number) => {
    const idx = `xc + ih${i} * ${W} + iw${i}`;
    return pad === 0 ? `x[${idx}]` : guarded("x", idx, `rv${i} && iw${i} >= 0 && iw${i} < ${W}`);
  };
  const wgsl = `${storageDecls(b ? ["x", "w", "b"] : ["x", "w"], ["y"])}
@compute @workgroup_size(${WGC})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let nn = i32(gid.z);
  let p0 = (t % ${pxBlocks}) * 4;
  let ob = t / ${pxBlocks};
  let g = ob / ${ocBlocks};
  let o0 = (ob % ${ocBlocks}) * 4;
${R4.map((j) => `  let oc${j} = g * ${og} + min(o0 + ${j}, ${og - 1});`).join("\n")}
${
    R4.map((i) =>
      `  let q${i} = min(p0 + ${i}, ${
        P - 1
      });\n  let hb${i} = (q${i} / ${OW}) * ${stride} - ${pad};\n  let wb${i} = (q${i} % ${OW}) * ${stride} - ${pad};`
    ).join("\n")
  }
  let xg = (nn * ${c} + g * ${cg}) * ${h * W};
${R4.map((i) => `  var a${i} = vec4<f32>(0.0);`).join("\n")}
  for (var ci = 0; ci < ${cg}; ci++) {
    let xc = xg + ci * ${h * W};
${R4.map((j) => `    let wo${j} = (oc${j} * ${cg} + ci) * ${kk};`).join("\n")}
    for (var kh = 0; kh < ${k}; kh++) {
${
    R4.map((i) =>
      `      let ih${i} = hb${i} + kh;${
        pad === 0 ? "" : `\n      let rv${i} = ih${i} >= 0 && ih${i} < ${h};`
      }`
    ).join("\n")
  }
      for (var kw = 0; kw < ${k}; kw++) {
        let kx = kh * ${k} + kw;
        let wv = vec4<f32>(${R4.map((j) => `w[wo${j} + kx]`).join(", ")});
${R4.map((i) => `        let iw${i} = wb${i} + kw;\n        a${i} += ${load(i)} * wv;`).join("\n")}
      }
    }
  }
${
    R4.map((i) =>
      R4.map((j) =>
        `  if (p0 + ${i} < ${P} && o0 + ${j} < ${og}) { y[(nn * ${o} + oc${j}) * ${P} + q${i}] = a${i}[${j}]${
          b ? ` + b[oc${j}]` : ""
        }; }`
      ).join("\n")
    ).join("\n")
  }
}`;
  dispatch(pipeline("conv_forward", wgsl), b ? [x, w, b, y] : [x, w, y], grid);
}

/** Input gradient: 4 input channels (of one group) × 4 input pixels per invocation. */
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
 * Weight gradient: 4 output channels × 4 input channels (of one group) at one kernel tap per
 * invocation, reduced over a chunk of the N·OH·OW output pixels; chunks are summed in a second pass.
 */
function directBackwardWeight(dy: Binding, x: Binding, dw: Binding, s: ConvShape): void {
  const { n, c, h, w: W, o, k, stride, pad, groups, oh: OH, ow: OW } = s;
  const cg = c / groups, og = o / groups, P = OH * OW, HW = h * W, kk = k * k;
  const ocBlocks = Math.ceil(og / 4), icBlocks = Math.ceil(cg / 4);
  const total = groups * ocBlocks * icBlocks * kk;
  const steps = n * P;
  const outputs = o * cg * kk;
  const { chunks, len } = splitReduction(steps, outputs, 128);
  const { groups: grid, index } = convGrid(total, chunks);
  const xload = (i: number) => pad === 0 ? `x[xp + xc${i}]` : guarded("x", `xp + xc${i}`, "v");
  const wgsl = `${storageDecls(["dy", "x"], ["out"])}
@compute @workgroup_size(${WGC})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let chunk = i32(gid.z);
  let kx = t % ${kk};
  let kh = kx / ${k};
  let kw = kx % ${k};
  var r = t / ${kk};
  let c0 = (r % ${icBlocks}) * 4;
  r = r / ${icBlocks};
  let o0 = (r % ${ocBlocks}) * 4;
  let g = r / ${ocBlocks};
${R4.map((j) => `  let oc${j} = g * ${og} + min(o0 + ${j}, ${og - 1});`).join("\n")}
${R4.map((i) => `  let ci${i} = min(c0 + ${i}, ${cg - 1});`).join("\n")}
${R4.map((j) => `  let dc${j} = oc${j} * ${P};`).join("\n")}
${R4.map((i) => `  let xc${i} = (g * ${cg} + ci${i}) * ${HW};`).join("\n")}
  let start = chunk * ${len};
  let end = min(start + ${len}, ${steps});
  var nn = start / ${P};
  var oh = (start % ${P}) / ${OW};
  var ow = start % ${OW};
${R4.map((j) => `  var a${j} = vec4<f32>(0.0);`).join("\n")}
  for (var i = start; i < end; i++) {
    let ih = oh * ${stride} - ${pad} + kh;
    let iw = ow * ${stride} - ${pad} + kw;
    let v = ih >= 0 && ih < ${h} && iw >= 0 && iw < ${W};
    let xp = nn * ${c * HW} + ih * ${W} + iw;
    let dp = nn * ${o * P} + oh * ${OW} + ow;
    let xv = vec4<f32>(${R4.map(xload).join(", ")});
${R4.map((j) => `    a${j} += dy[dp + dc${j}] * xv;`).join("\n")}
    ow++;
    if (ow == ${OW}) {
      ow = 0;
      oh++;
      if (oh == ${OH}) {
        oh = 0;
        nn++;
      }
    }
  }
  let ob = chunk * ${outputs};
${
    R4.map((j) =>
      R4.map((i) =>
        `  if (o0 + ${j} < ${og} && c0 + ${i} < ${cg}) { out[ob + (oc${j} * ${cg} + ci${i}) * ${kk} + kx] = a${j}[${i}]; }`
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
