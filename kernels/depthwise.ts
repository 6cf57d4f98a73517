// Depthwise k×k convolutions (groups = C = O): each channel convolved with its own k×k filter.
// Every invocation handles a run of 4 neighbouring pixels of one row and keeps the input (or output
// gradient) segment they share in registers, so each loaded value feeds several multiply-adds. The
// kernel size, stride and padding are constants: the loops over the kernel columns are unrolled.
//   forward      y[n,c,oh,ow]  = Σ x[n,c,oh·s−p+kh, ow·s−p+kw] · w[c,kh,kw] + b[c]
//   input grad   dx[n,c,ih,iw] = Σ over (kh,kw) with ih = oh·s−p+kh, iw = ow·s−p+kw of dy · w
//   weight grad  dw[c,kh,kw]   = Σ_{n,oh,ow} dy · x, partial sums over chunks of the N·OH output rows
//                                 followed by a second pass over the chunks

import { type Binding, dispatch, pipeline } from "./runtime.ts";
import { storageDecls } from "./wgsl.ts";
import { convGrid, type ConvShape, guarded, splitReduction, WGC, withPartials } from "./conv_common.ts";

const PX = 4;
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** y = depthwise(x, w) + b. */
export function depthwiseForward(x: Binding, w: Binding, b: Binding | null, y: Binding, s: ConvShape): void {
  const { n, c, h, w: W, k, stride, pad, oh: OH, ow: OW } = s;
  const owBlocks = Math.ceil(OW / PX);
  const total = c * OH * owBlocks;
  const seg = (PX - 1) * stride + k; // input columns the 4 outputs read in one kernel row
  const { groups, index } = convGrid(total, n);
  const wgsl = `${storageDecls(b ? ["x", "w", "b"] : ["x", "w"], ["y"])}
@compute @workgroup_size(${WGC})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let nn = i32(gid.z);
  let ow0 = (t % ${owBlocks}) * ${PX};
  let r = t / ${owBlocks};
  let oh = r % ${OH};
  let ch = r / ${OH};
  let ihb = oh * ${stride} - ${pad};
  let iwb = ow0 * ${stride} - ${pad};
  let xc = (nn * ${c} + ch) * ${h * W};
  let wc = ch * ${k * k};
${range(PX).map((j) => `  var a${j} = 0.0;`).join("\n")}
  for (var kh = 0; kh < ${k}; kh++) {
    let ih = ihb + kh;
    if (ih < 0 || ih >= ${h}) { continue; }
    let row = xc + ih * ${W};
    let wr = wc + kh * ${k};
${range(k).map((kw) => `    let w${kw} = w[wr + ${kw}];`).join("\n")}
${
    range(seg).map((m) =>
      `    let iw${m} = iwb + ${m};\n    let s${m} = ${
        guarded("x", `row + iw${m}`, `iw${m} >= 0 && iw${m} < ${W}`)
      };`
    ).join("\n")
  }
${
    range(PX).map((j) => `    a${j} += ${range(k).map((kw) => `s${j * stride + kw} * w${kw}`).join(" + ")};`)
      .join(
        "\n",
      )
  }
  }
  let yb = (nn * ${c} + ch) * ${OH * OW} + oh * ${OW} + ow0;
${
    range(PX).map((j) => `  if (ow0 + ${j} < ${OW}) { y[yb + ${j}] = a${j}${b ? " + b[ch]" : ""}; }`).join(
      "\n",
    )
  }
}`;
  dispatch(pipeline("depthwise_forward", wgsl), b ? [x, w, b, y] : [x, w, y], groups);
}

/** dx of a depthwise convolution. */
export function depthwiseBackwardInput(dy: Binding, w: Binding, dx: Binding, s: ConvShape): void {
  const { n, c, h, w: W, k, stride, pad, oh: OH, ow: OW } = s;
  // a run of input columns that starts at a multiple of the stride: which (column, kw) pairs meet an
  // output column is then known when generating the kernel
  const run = Math.ceil(PX / stride) * stride;
  const iwBlocks = Math.ceil(W / run);
  const total = c * h * iwBlocks;
  const pairs: { j: number; kw: number; e: number }[] = [];
  for (let j = 0; j < run; j++) {
    for (let kw = 0; kw < k; kw++) {
      const d = j + pad - kw;
      if (((d % stride) + stride) % stride === 0) pairs.push({ j, kw, e: d / stride });
    }
  }
  const es = [...new Set(pairs.map((q) => q.e))].sort((a, b) => a - b);
  const ename = (e: number) => (e < 0 ? `m${-e}` : `p${e}`);
  const { groups, index } = convGrid(total, n);
  const wgsl = `${storageDecls(["dy", "w"], ["dx"])}
@compute @workgroup_size(${WGC})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let nn = i32(gid.z);
  let iw0 = (t % ${iwBlocks}) * ${run};
  let r = t / ${iwBlocks};
  let ih = r % ${h};
  let ch = r / ${h};
  let ow0 = iw0 / ${stride};
  let dyc = (nn * ${c} + ch) * ${OH * OW};
  let wc = ch * ${k * k};
${range(run).map((j) => `  var a${j} = 0.0;`).join("\n")}
  for (var kh = 0; kh < ${k}; kh++) {
    let th = ih + ${pad} - kh;
    if (th < 0${stride > 1 ? ` || th % ${stride} != 0` : ""}) { continue; }
    let oh = th / ${stride};
    if (oh >= ${OH}) { continue; }
    let row = dyc + oh * ${OW};
    let wr = wc + kh * ${k};
${range(k).map((kw) => `    let w${kw} = w[wr + ${kw}];`).join("\n")}
${
    es.map((e) => {
      const v = ename(e);
      return `    let o${v} = ow0 + ${e};\n    let d${v} = ${
        guarded("dy", `row + o${v}`, `o${v} >= 0 && o${v} < ${OW}`)
      };`;
    }).join("\n")
  }
${
    range(run).map((j) => {
      const terms = pairs.filter((q) => q.j === j).map((q) => `d${ename(q.e)} * w${q.kw}`);
      return terms.length ? `    a${j} += ${terms.join(" + ")};` : "";
    }).filter((l) => l).join("\n")
  }
  }
  let xb = (nn * ${c} + ch) * ${h * W} + ih * ${W} + iw0;
${range(run).map((j) => `  if (iw0 + ${j} < ${W}) { dx[xb + ${j}] = a${j}; }`).join("\n")}
}`;
  dispatch(pipeline("depthwise_backward_input", wgsl), [dy, w, dx], groups);
}

/** dw of a depthwise convolution: partial sums over chunks of output rows, then their sum. */
export function depthwiseBackwardWeight(dy: Binding, x: Binding, dw: Binding, s: ConvShape): void {
  const { n, c, h, w: W, k, stride, pad, oh: OH, ow: OW } = s;
  const rows = n * OH;
  const outputs = c * k * k;
  const { chunks, len } = splitReduction(rows, outputs, Math.ceil(128 / OW));
  const owBlocks = Math.ceil(OW / PX);
  const seg = (PX - 1) * stride + k;
  const total = c * k; // one invocation per (channel, kernel row), all kernel columns in registers
  const { groups, index } = convGrid(total, chunks);
  const wgsl = `${storageDecls(["dy", "x"], ["out"])}
@compute @workgroup_size(${WGC})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let chunk = i32(gid.z);
  let kh = t % ${k};
  let ch = t / ${k};
  let start = chunk * ${len};
  let end = min(start + ${len}, ${rows});
${range(k).map((kw) => `  var a${kw} = 0.0;`).join("\n")}
  for (var r = start; r < end; r++) {
    let nn = r / ${OH};
    let oh = r % ${OH};
    let ih = oh * ${stride} - ${pad} + kh;
    if (ih < 0 || ih >= ${h}) { continue; }
    let xrow = (nn * ${c} + ch) * ${h * W} + ih * ${W};
    let dyrow = (nn * ${c} + ch) * ${OH * OW} + oh * ${OW};
    for (var ob = 0; ob < ${owBlocks}; ob++) {
      let ow0 = ob * ${PX};
      let iwb = ow0 * ${stride} - ${pad};
${
    range(PX).map((j) =>
      OW % PX === 0
        ? `      let d${j} = dy[dyrow + ow0 + ${j}];`
        : `      let d${j} = ${guarded("dy", `dyrow + ow0 + ${j}`, `ow0 + ${j} < ${OW}`)};`
    ).join("\n")
  }
${
    range(seg).map((m) =>
      `      let iw${m} = iwb + ${m};\n      let s${m} = ${
        guarded("x", `xrow + iw${m}`, `iw${m} >= 0 && iw${m} < ${W}`)
      };`
    ).join("\n")
  }
${
    range(k).map((kw) =>
      `      a${kw} += ${range(PX).map((j) => `d${j} * s${j * stride + kw}`).join(" + ")};`
    ).join(
      "\n",
    )
  }
    }
  }
  let ob = chunk * ${outputs} + ch * ${k * k} + kh * ${k};
${range(k).map((kw) => `  out[ob + ${kw}] = a${kw};`).join("\n")}
}`;
  withPartials(
    chunks,
    outputs,
    dw,
    (dst) => dispatch(pipeline("depthwise_backward_weight", wgsl), [dy, x, dst], groups),
  );
}
