// Depthwise k×k convolutions (groups = C = O): each channel convolved with its own k×k filter.
// Every invocation keeps the channel's k×k weights in registers and handles a block of up to 4 output
// rows × 8 output columns: each input row segment is loaded once and feeds every output row of the
// block that uses it. Kernel size, stride and padding are constants; the kernel loops are unrolled.
//   forward      y[n,c,oh,ow]  = Σ x[n,c,oh·s−p+kh, ow·s−p+kw] · w[c,kh,kw] + b[c]
//   input grad   dx = the same kernel over dy with the flipped filter and padding k−1−p (stride 1);
//                a kernel with the (column, tap) parities resolved at generation time (stride > 1)
//   weight grad  dw[c,kh,kw]   = Σ_{n,oh,ow} dy · x: one workgroup per channel, its lanes over the output
//                                 blocks, their k×k sums added by a tree in workgroup memory (fusion
//                                 "depthwise-weight-tree"); unfused (or when the tree does not fit in
//                                 workgroup memory), partial sums over chunks and a second pass
//                                 (the default where the profile turns the tree off)
// Where the profile says so (lavapipe), x (and the weight gradient's dy) are fetched from operand
// textures (kernels/texture_operand.ts), a copy each first: there a texel fetch is a vectorised gather.

import { type Binding, dispatch, gpu, kernel, params } from "./runtime.ts";
import { paramsDecl } from "./wgsl.ts";
import { ANY_BATCH, NOMINAL_BATCH } from "./batch_class.ts";
import {
  fitsOperandTexture,
  operandResource,
  texelLoad,
  textureDecl,
  textureReadTag,
  WGSL_TEXEL_COORD,
} from "./texture_operand.ts";
import { fusionEnabled } from "./fusions.ts";
import {
  depthwiseTiledBackwardInput,
  depthwiseTiledBackwardWeight,
  depthwiseTiledForward,
  depthwiseTiledSupports,
} from "./depthwise_tiled.ts";
import { CONV_PASSES, convTuneKey, type ConvVariant, isDepthwise } from "./variant.ts";
import { adapterProfile } from "./profile.ts";
import {
  type Axis,
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

/** Output block of one invocation: up to the profile's depthwiseBlock rows × columns. */
function block(outRows: number, outCols: number): { rh: number; px: number } {
  const b = adapterProfile().depthwiseBlock;
  return { rh: Math.min(b.rows, outRows), px: Math.min(b.cols, outCols) };
}

/**
 * Whether a tensor of `n` images of `perImage` floats is read through an operand texture (a copy
 * first): where the profile says texel fetches beat storage loads (depthwiseTextures). Decided as for
 * the nominal batch (or a larger one), so that it does not change below it.
 */
function texOperand(n: number, perImage: number): boolean {
  return adapterProfile().depthwiseTextures && perImage % 4 === 0 &&
    fitsOperandTexture(Math.max(n, NOMINAL_BATCH) * perImage);
}

/**
 * WGSL declaring operand `name` at `binding`: a storage array, or an operand texture with `ld_<name>(i)`
 * fetching float i (texel i/4, component i mod 4).
 */
function operandDecl(name: string, binding: number, tex: boolean): string {
  if (!tex) return `@group(0) @binding(${binding}) var<storage, read> ${name}: array<f32>;`;
  return `${textureDecl(name, binding)}
fn ld_${name}(i: i32) -> f32 { let u = u32(i); return ${texelLoad(name, "tc(u >> 2u)")}[u & 3u]; }`;
}

/** WGSL of float `idx` of operand `name` where `cond` holds, else 0. */
function load(name: string, idx: string, cond: string, tex: boolean): string {
  return tex ? `select(0.0, ld_${name}(${idx}), ${cond})` : guarded(name, idx, cond);
}

/**
 * A depthwise pass out = depthwise(inp, w) (+ b) over the axes `rows` and `cols` (see Axis);
 * `widx(u, v)` is the offset of the weight of row tap u and column tap v in a channel's filter.
 */
function depthwiseConv(
  name: string,
  inp: Binding,
  w: Binding,
  b: Binding | null,
  out: Binding,
  n: number,
  c: number,
  k: number,
  rows: Axis,
  cols: Axis,
  widx: (u: number, v: number) => number,
  widxKey: string,
  parts: Binding | null = null,
): void {
  const h = rows.inSize, W = cols.inSize;
  const { rh, px } = block(rows.outSub, cols.outSub);
  const rowBlocks = Math.ceil(rows.outSub / rh), colBlocks = Math.ceil(cols.outSub / px);
  const total = c * rowBlocks * colBlocks;
  const minV = Math.min(0, cols.step * (cols.taps - 1));
  const seg = cols.taps > 0 ? (px - 1) * cols.stride + cols.taps : 0;
  const segIdx = (j: number, v: number) => j * cols.stride + cols.step * v - minV;
  const { groups, index } = convGrid(total, n);
  const tex = texOperand(n, c * h * W);
  // the batch is the grid's z: the key and the source leave it out
  const key = specKey(
    name,
    c,
    k,
    rows,
    cols,
    !!b,
    widxKey,
    groups.slice(0, 2),
    !!parts,
    tex && textureReadTag(),
  );
  const pipe = kernel(key, "depthwise/direct", () => {
    const R = range(rh), J = range(px), U = range(rows.taps), V = range(cols.taps);
    // input rows (relative to oh0·stride + off) and the (output row, row tap) pairs that read each
    const uses = new Map<number, [number, number][]>();
    if (cols.taps > 0) {
      for (const r of R) {
        for (const u of U) {
          const rel = r * rows.stride + rows.step * u;
          uses.set(rel, [...(uses.get(rel) ?? []), [r, u]]);
        }
      }
    }
    const rowCode = ([rel, pairs]: [number, [number, number][]]) =>
      `  {
    let ih = ihb + ${rel};
    if (ih >= 0 && ih < ${h}) {
      let row = xc + ih * ${W};
${range(seg).map((m) => `      let s${m} = ${load("x", `row + ${m}`, `cv${m}`, tex)};`).join("\n")}
${
        pairs.map(([r, u]) =>
          J.map((j) => `      a${r}_${j} += ${V.map((v) => `s${segIdx(j, v)} * w${u}_${v}`).join(" + ")};`)
            .join("\n")
        ).join("\n")
      }
    }
  }`;
    const reads = b ? 3 : 2;
    const partsDecl = parts
      ? `\n@group(0) @binding(${reads + 1}) var<storage, read_write> parts: array<vec4<f32>>;`
      : "";
    const ok = (r: number, j: number) => `oh0 + ${r} < ${rows.outSub} && ow0 + ${j} < ${cols.outSub}`;
    const val = (r: number, j: number) => `a${r}_${j}${b ? " + b[ch]" : ""}`;
    const RJ = R.flatMap((r) => J.map((j) => [r, j] as const));
    // the block's count, mean and sum of squared deviations (two passes over its registers), which
    // normStatsFromParts combines into a normalisation's statistics (fusion "depthwise-norm-stats")
    const stats = parts
      ? `
  var pc = 0.0;
  var ps = 0.0;
${RJ.map(([r, j]) => `  if (${ok(r, j)}) { pc += 1.0; ps += ${val(r, j)}; }`).join("\n")}
  let pm = ps / max(pc, 1.0);
  var pq = 0.0;
${RJ.map(([r, j]) => `  if (${ok(r, j)}) { let d = ${val(r, j)} - pm; pq += d * d; }`).join("\n")}
  parts[nn * ${total} + t] = vec4<f32>(pc, pm, pq, 0.0);`
      : "";
    return `${tex ? WGSL_TEXEL_COORD : ""}
${operandDecl("x", 0, tex)}
@group(0) @binding(1) var<storage, read> w: array<f32>;
${
      b
        ? "@group(0) @binding(2) var<storage, read> b: array<f32>;\n"
        : ""
    }@group(0) @binding(${reads}) var<storage, read_write> y: array<f32>;${partsDecl}
@compute @workgroup_size(${wgc()})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let nn = i32(gid.z);
  let ow0 = (t % ${colBlocks}) * ${px};
  let r = t / ${colBlocks};
  let oh0 = (r % ${rowBlocks}) * ${rh};
  let ch = r / ${rowBlocks};
  let ihb = oh0 * ${rows.stride} + ${rows.off};
  let iwb = ow0 * ${cols.stride} + ${cols.off + minV};
  let xc = (nn * ${c} + ch) * ${h * W} + iwb;
  let wc = ch * ${k * k};
  if (t < 0) { y[0] = ${
      tex ? "ld_x(0)" : "x[0]"
    } + w[0]; } // keeps every binding in the layout when no tap reaches the block
${U.map((u) => V.map((v) => `  let w${u}_${v} = w[wc + ${widx(u, v)}];`).join("\n")).join("\n")}
${range(seg).map((m) => `  let cv${m} = iwb + ${m} >= 0 && iwb + ${m} < ${W};`).join("\n")}
${R.map((r) => J.map((j) => `  var a${r}_${j} = 0.0;`).join("\n")).join("\n")}
${[...uses.entries()].sort((p, q) => p[0] - q[0]).map(rowCode).join("\n")}
  let yb = (nn * ${c} + ch) * ${rows.outFull * cols.outFull};
${
      RJ.map(([r, j]) =>
        `  if (${
          ok(r, j)
        }) { y[yb + (${rows.outA} + ${rows.outS} * (oh0 + ${r})) * ${cols.outFull} + ${cols.outA} + ${cols.outS} * (ow0 + ${j})] = ${
          val(r, j)
        }; }`
      ).join("\n")
    }${stats}
}`;
  });
  const xr = operandResource("DX", inp, n * c * h * W, tex);
  dispatch(pipe, [xr, w, ...(b ? [b] : []), out, ...(parts ? [parts] : [])], groups);
}

/**
 * Output blocks per image of the forward pass: with `parts`, depthwiseForward writes one
 * (count, mean, M2, 0) per block, channel-major (blocks of channel ch at ch·blocks/C …).
 */
export function depthwiseForwardParts(s: ConvShape): number {
  const { rh, px } = block(s.oh, s.ow);
  return s.c * Math.ceil(s.oh / rh) * Math.ceil(s.ow / px);
}

/**
 * y = depthwise(x, w) + b; with `parts` (N · depthwiseForwardParts(s) vec4s) also each output block's
 * element count, mean and sum of squared deviations from it.
 */
export function depthwiseForward(
  x: Binding,
  w: Binding,
  b: Binding | null,
  y: Binding,
  s: ConvShape,
  parts: Binding | null = null,
): void {
  const { k, stride, pad } = s;
  const rows = forwardAxis(s.h, s.oh, k, stride, pad), cols = forwardAxis(s.w, s.ow, k, stride, pad);
  depthwiseConv("depthwise_forward", x, w, b, y, s.n, s.c, k, rows, cols, (u, v) => u * k + v, "f", parts);
}

/**
 * dx of a depthwise convolution, split by the input position modulo the stride into stride-1
 * passes over dy with sub-filters (see `parityAxis`).
 */
export function depthwiseBackwardInput(dy: Binding, w: Binding, dx: Binding, s: ConvShape): void {
  const { k, stride, pad } = s;
  for (let a = 0; a < stride; a++) {
    for (let b = 0; b < stride; b++) {
      const rows = parityAxis(s.h, s.oh, a, k, stride, pad), cols = parityAxis(s.w, s.ow, b, k, stride, pad);
      if (rows.axis.outSub <= 0 || cols.axis.outSub <= 0) continue;
      depthwiseConv(
        "depthwise_backward_input",
        dy,
        w,
        null,
        dx,
        s.n,
        s.c,
        k,
        rows.axis,
        cols.axis,
        (u, v) => (rows.t0 + stride * u) * k + cols.t0 + stride * v,
        `b${stride},${rows.t0},${cols.t0}`,
      );
    }
  }
}

/** Whether the weight gradient's k×k sums of a workgroup (one per lane) fit in workgroup memory. */
export function depthwiseWeightTreeFits(k: number): boolean {
  return k * k * wgc() * 4 <= gpu().limits.maxComputeWorkgroupStorageSize;
}

// Division and remainder by a constant, folded when the constant is 1: Chromium's SwiftShader (Dawn)
// never finishes compiling a loop that divides by a literal 1 (wgpu on lavapipe does).
const div = (a: string, n: number) => n === 1 ? a : `${a} / ${n}`;
const mod = (a: string, n: number) => n === 1 ? "0" : `(${a} % ${n})`;

/**
 * dw of a depthwise convolution. With the tree: a workgroup per channel whose lanes take every wgc()-th
 * output block and whose sums meet in workgroup memory, writing dw directly (one dispatch). Without:
 * an invocation per (channel, chunk of output blocks) writes partial sums, and a second pass adds them.
 */
export function depthwiseBackwardWeight(dy: Binding, x: Binding, dw: Binding, s: ConvShape): void {
  const { n, c, h, w: W, k, stride, pad, oh: OH, ow: OW } = s;
  const { rh, px } = block(OH, OW);
  const rowBlocks = Math.ceil(OH / rh), colBlocks = Math.ceil(OW / px);
  const steps = n * rowBlocks * colBlocks;
  const outputs = c * k * k;
  const tree = fusionEnabled("depthwise-weight-tree") && depthwiseWeightTreeFits(k);
  // the chunks over the images as for the nominal batch; their length (and the steps) come from P
  const chunks = tree ? 1 : splitReduction(NOMINAL_BATCH * rowBlocks * colBlocks, outputs, 4).chunks;
  const len = Math.ceil(steps / chunks);
  const seg = (px - 1) * stride + k, rowsIn = (rh - 1) * stride + k;
  const { groups, index } = tree
    ? { groups: [c, 1, 1] as [number, number, number], index: "i32(gid.x)" }
    : convGrid(c, chunks);
  const tex = texOperand(n, c * h * W) && texOperand(n, c * OH * OW);
  const key = specKey(
    "depthwise_backward_weight",
    convKey({ ...s, n: ANY_BATCH }),
    chunks,
    groups,
    tree,
    tex && textureReadTag(),
  );
  const pipe = kernel(key, "depthwise/direct", () => {
    const R = range(rh), J = range(px), K = range(k);
    const rowCode = (u: number) => {
      const uses = R.filter((r) => u - r * stride >= 0 && u - r * stride < k);
      if (!uses.length) return "";
      return `    {
      let ih = ihb + ${u};
      if (ih >= 0 && ih < ${h}) {
        let row = xc + ih * ${W};
${range(seg).map((m) => `        let s${m} = ${load("x", `row + ${m}`, `cv${m}`, tex)};`).join("\n")}
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
    const taps = K.flatMap((kh) => K.map((kw) => [kh, kw]));
    // the tree: every lane's k×k sums side by side, halved until lane 0 holds the channel's
    const treeCode = `  let l = i32(lid);
${taps.map(([kh, kw], t) => `  part[${t * wgc()} + l] = a${kh}_${kw};`).join("\n")}
  workgroupBarrier();
  for (var half = ${wgc() / 2}; half > 0; half = half / 2) {
    if (l < half) {
${taps.map((_, t) => `      part[${t * wgc()} + l] += part[${t * wgc()} + l + half];`).join("\n")}
    }
    workgroupBarrier();
  }
  if (l == 0) {
${taps.map((_, t) => `    out[ch * ${k * k} + ${t}] = part[${t * wgc()}];`).join("\n")}
  }`;
    const partialCode = `  let ob = chunk * ${outputs} + ch * ${k * k};
${K.map((kh) => K.map((kw) => `  out[ob + ${kh * k + kw}] = a${kh}_${kw};`).join("\n")).join("\n")}`;
    const head = tree
      ? `var<workgroup> part: array<f32, ${k * k * wgc()}>;
@compute @workgroup_size(${wgc()})
fn main(@builtin(workgroup_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let ch = ${index};
${K.map((kh) => K.map((kw) => `  var a${kh}_${kw} = 0.0;`).join("\n")).join("\n")}
  for (var st = i32(lid); st < i32(P.steps); st += ${wgc()}) {`
      : `@compute @workgroup_size(${wgc()})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let ch = ${index};
  if (ch >= ${c}) { return; }
  let chunk = i32(gid.z);
  let start = chunk * i32(P.len);
  let end = min(start + i32(P.len), i32(P.steps));
${K.map((kh) => K.map((kw) => `  var a${kh}_${kw} = 0.0;`).join("\n")).join("\n")}
  for (var st = start; st < end; st++) {`;
    return `${tex ? WGSL_TEXEL_COORD : ""}
${operandDecl("dy", 0, tex)}
${operandDecl("x", 1, tex)}
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
${paramsDecl(3, ["steps", "len"])}
${head}
    let ow0 = ${mod("st", colBlocks)} * ${px};
    let r = ${div("st", colBlocks)};
    let oh0 = ${mod("r", rowBlocks)} * ${rh};
    let nn = ${div("r", rowBlocks)};
    let ihb = oh0 * ${stride} - ${pad};
    let iwb = ow0 * ${stride} - ${pad};
    let xc = (nn * ${c} + ch) * ${h * W} + iwb;
    let dyb = (nn * ${c} + ch) * ${OH * OW} + oh0 * ${OW} + ow0;
${range(seg).map((m) => `    let cv${m} = iwb + ${m} >= 0 && iwb + ${m} < ${W};`).join("\n")}
${
      R.map((r) =>
        J.map((j) =>
          `    let d${r}_${j} = ${
            load("dy", `dyb + ${r * OW + j}`, `oh0 + ${r} < ${OH} && ow0 + ${j} < ${OW}`, tex)
          };`
        ).join("\n")
      ).join("\n")
    }
${range(rowsIn).map(rowCode).filter((l) => l).join("\n")}
  }
${tree ? treeCode : partialCode}
}`;
  });
  const dyr = operandResource("DY", dy, n * c * OH * OW, tex),
    xr = operandResource("DX", x, n * c * h * W, tex);
  withPartials(chunks, outputs, dw, (dst) => dispatch(pipe, [dyr, xr, dst, params(steps, len)], groups));
}

// ---------------------------------------------------------------- the variants

const TILED_PASS = { forward: "forward", inputGrad: "input", weightGrad: "weight" } as const;

/** The depthwise family (groups = C = O), in the order the planner lists candidates. */
export const DEPTHWISE_VARIANTS: ConvVariant[] = [
  {
    // halo tiles in workgroup memory, stride 1 (kernels/depthwise_tiled.ts); the default where the
    // profile's tiledDepthwise says workgroup memory pays
    name: "depthwise/tiled",
    passes: CONV_PASSES,
    applies: (s, pass) => isDepthwise(s) && depthwiseTiledSupports(s, TILED_PASS[pass]),
    rank: (_s, _pass, prof) => prof.tiledDepthwise ? 0 : null,
    run: (b, s) => {
      if (b.pass === "forward") depthwiseTiledForward(b.x, b.w, b.b, b.y, s);
      else if (b.pass === "inputGrad") depthwiseTiledBackwardInput(b.dy, b.w, b.dx, s);
      else depthwiseTiledBackwardWeight(b.dy, b.x, b.dw, s);
    },
    tuneKey: convTuneKey,
  },
  {
    name: "depthwise/direct",
    passes: CONV_PASSES,
    applies: (s) => isDepthwise(s),
    rank: () => 1,
    statsParts: depthwiseForwardParts,
    run: (b, s) => {
      if (b.pass === "forward") depthwiseForward(b.x, b.w, b.b, b.y, s, b.parts ?? null);
      else if (b.pass === "inputGrad") depthwiseBackwardInput(b.dy, b.w, b.dx, s);
      else depthwiseBackwardWeight(b.dy, b.x, b.dw, s);
    },
    tuneKey: convTuneKey,
  },
];
