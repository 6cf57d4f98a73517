// Depthwise k×k convolutions (groups = C = O): each channel convolved with its own k×k filter.
// Every invocation keeps the channel's k×k weights in registers and handles a block of up to 4 output
// rows × 8 output columns: each input row segment is loaded once and feeds every output row of the
// block that uses it. Kernel size, stride and padding are constants; the kernel loops are unrolled.
//   forward      y[n,c,oh,ow]  = Σ x[n,c,oh·s−p+kh, ow·s−p+kw] · w[c,kh,kw] + b[c]
//   input grad   dx = the same kernel over dy with the flipped filter and padding k−1−p (stride 1);
//                a kernel with the (column, tap) parities resolved at generation time (stride > 1)
//   weight grad  dw[c,kh,kw]   = Σ_{n,oh,ow} dy · x, partial sums over chunks of the output blocks
//                                 followed by a second pass over the chunks

import { type Binding, dispatch, pipeline } from "./runtime.ts";
import { storageDecls } from "./wgsl.ts";
import {
  convGrid,
  type ConvShape,
  guarded,
  range,
  splitReduction,
  WGC,
  withPartials,
} from "./conv_common.ts";

const PX = 4;

interface DwDims {
  n: number;
  c: number;
  h: number;
  w: number;
  oh: number;
  ow: number;
  k: number;
  stride: number;
  pad: number;
}

/** Output block of one invocation: rows × columns. */
function block(d: DwDims): { rh: number; px: number } {
  return { rh: Math.min(4, d.oh), px: Math.min(8, d.ow) };
}

/** out = depthwise(inp, w) (+ b); with `flip` the filter is read rotated by 180°. */
function depthwiseConv(
  name: string,
  inp: Binding,
  w: Binding,
  b: Binding | null,
  out: Binding,
  d: DwDims,
  flip: boolean,
): void {
  const { n, c, h, w: W, oh: OH, ow: OW, k, stride, pad } = d;
  const { rh, px } = block(d);
  const rowBlocks = Math.ceil(OH / rh), colBlocks = Math.ceil(OW / px);
  const total = c * rowBlocks * colBlocks;
  const seg = (px - 1) * stride + k, rowsIn = (rh - 1) * stride + k;
  const { groups, index } = convGrid(total, n);
  const R = range(rh), J = range(px), K = range(k);
  const widx = (kh: number, kw: number) => (flip ? (k - 1 - kh) * k + (k - 1 - kw) : kh * k + kw);
  const rowCode = (u: number) => {
    const uses = R.filter((r) => u - r * stride >= 0 && u - r * stride < k);
    if (!uses.length) return "";
    return `  {
    let ih = ihb + ${u};
    if (ih >= 0 && ih < ${h}) {
      let row = xc + ih * ${W};
${range(seg).map((m) => `      let s${m} = ${guarded("x", `row + ${m}`, `cv${m}`)};`).join("\n")}
${
      uses.map((r) => {
        const kh = u - r * stride;
        return J.map((j) =>
          `      a${r}_${j} += ${K.map((kw) => `s${j * stride + kw} * w${kh}_${kw}`).join(" + ")};`
        )
          .join("\n");
      }).join("\n")
    }
    }
  }`;
  };
  const wgsl = `${storageDecls(b ? ["x", "w", "b"] : ["x", "w"], ["y"])}
@compute @workgroup_size(${WGC})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let nn = i32(gid.z);
  let ow0 = (t % ${colBlocks}) * ${px};
  let r = t / ${colBlocks};
  let oh0 = (r % ${rowBlocks}) * ${rh};
  let ch = r / ${rowBlocks};
  let ihb = oh0 * ${stride} - ${pad};
  let iwb = ow0 * ${stride} - ${pad};
  let xc = (nn * ${c} + ch) * ${h * W} + iwb;
  let wc = ch * ${k * k};
${K.map((kh) => K.map((kw) => `  let w${kh}_${kw} = w[wc + ${widx(kh, kw)}];`).join("\n")).join("\n")}
${range(seg).map((m) => `  let cv${m} = iwb + ${m} >= 0 && iwb + ${m} < ${W};`).join("\n")}
${R.map((r) => J.map((j) => `  var a${r}_${j} = 0.0;`).join("\n")).join("\n")}
${range(rowsIn).map(rowCode).filter((l) => l).join("\n")}
  let yb = (nn * ${c} + ch) * ${OH * OW} + oh0 * ${OW} + ow0;
${
    R.map((r) =>
      J.map((j) =>
        `  if (oh0 + ${r} < ${OH} && ow0 + ${j} < ${OW}) { y[yb + ${r * OW + j}] = a${r}_${j}${
          b ? " + b[ch]" : ""
        }; }`
      ).join("\n")
    ).join("\n")
  }
}`;
  dispatch(pipeline(name, wgsl), b ? [inp, w, b, out] : [inp, w, out], groups);
}

/** y = depthwise(x, w) + b. */
export function depthwiseForward(x: Binding, w: Binding, b: Binding | null, y: Binding, s: ConvShape): void {
  const { n, c, h, w: W, oh, ow, k, stride, pad } = s;
  depthwiseConv("depthwise_forward", x, w, b, y, { n, c, h, w: W, oh, ow, k, stride, pad }, false);
}

/** dx of a depthwise convolution. */
export function depthwiseBackwardInput(dy: Binding, w: Binding, dx: Binding, s: ConvShape): void {
  const { n, c, h, w: W, k, stride, pad, oh: OH, ow: OW } = s;
  if (stride === 1 && pad <= k - 1) {
    const d = { n, c, h: OH, w: OW, oh: h, ow: W, k, stride: 1, pad: k - 1 - pad };
    return depthwiseConv("depthwise_backward_input_s1", dy, w, null, dx, d, true);
  }
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

/** dw of a depthwise convolution: partial sums over chunks of output blocks, then their sum. */
export function depthwiseBackwardWeight(dy: Binding, x: Binding, dw: Binding, s: ConvShape): void {
  const { n, c, h, w: W, k, stride, pad, oh: OH, ow: OW } = s;
  const { rh, px } = block(s);
  const rowBlocks = Math.ceil(OH / rh), colBlocks = Math.ceil(OW / px);
  const steps = n * rowBlocks * colBlocks;
  const outputs = c * k * k;
  const { chunks, len } = splitReduction(steps, outputs, 4);
  const seg = (px - 1) * stride + k, rowsIn = (rh - 1) * stride + k;
  const { groups, index } = convGrid(c, chunks);
  const R = range(rh), J = range(px), K = range(k);
  const rowCode = (u: number) => {
    const uses = R.filter((r) => u - r * stride >= 0 && u - r * stride < k);
    if (!uses.length) return "";
    return `    {
      let ih = ihb + ${u};
      if (ih >= 0 && ih < ${h}) {
        let row = xc + ih * ${W};
${range(seg).map((m) => `        let s${m} = ${guarded("x", `row + ${m}`, `cv${m}`)};`).join("\n")}
${
      uses.map((r) => {
        const kh = u - r * stride;
        return K.map((kw) =>
          `        a${kh}_${kw} += ${J.map((j) => `d${r}_${j} * s${j * stride + kw}`).join(" + ")};`
        )
          .join("\n");
      }).join("\n")
    }
      }
    }`;
  };
  const wgsl = `${storageDecls(["dy", "x"], ["out"])}
@compute @workgroup_size(${WGC})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let ch = ${index};
  if (ch >= ${c}) { return; }
  let chunk = i32(gid.z);
  let start = chunk * ${len};
  let end = min(start + ${len}, ${steps});
${K.map((kh) => K.map((kw) => `  var a${kh}_${kw} = 0.0;`).join("\n")).join("\n")}
  for (var st = start; st < end; st++) {
    let ow0 = (st % ${colBlocks}) * ${px};
    let r = st / ${colBlocks};
    let oh0 = (r % ${rowBlocks}) * ${rh};
    let nn = r / ${rowBlocks};
    let ihb = oh0 * ${stride} - ${pad};
    let iwb = ow0 * ${stride} - ${pad};
    let xc = (nn * ${c} + ch) * ${h * W} + iwb;
    let dyb = (nn * ${c} + ch) * ${OH * OW} + oh0 * ${OW} + ow0;
${range(seg).map((m) => `    let cv${m} = iwb + ${m} >= 0 && iwb + ${m} < ${W};`).join("\n")}
${
    R.map((r) =>
      J.map((j) =>
        `    let d${r}_${j} = ${
          guarded("dy", `dyb + ${r * OW + j}`, `oh0 + ${r} < ${OH} && ow0 + ${j} < ${OW}`)
        };`
      ).join("\n")
    ).join("\n")
  }
${range(rowsIn).map(rowCode).filter((l) => l).join("\n")}
  }
  let ob = chunk * ${outputs} + ch * ${k * k};
${K.map((kh) => K.map((kw) => `  out[ob + ${kh * k + kw}] = a${kh}_${kw};`).join("\n")).join("\n")}
}`;
  withPartials(
    chunks,
    outputs,
    dw,
    (dst) => dispatch(pipeline("depthwise_backward_weight", wgsl), [dy, x, dst], groups),
  );
}
