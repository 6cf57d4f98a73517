// Halo-tiled depthwise k×k convolutions for real GPUs (groups = C = O, stride 1, any padding; the
// models' 7×7 with padding 3). A workgroup covers an output tile of TH×TW pixels of one channel plane (or
// `slabs` such tiles at once when the image is small, so the workgroup still has enough invocations):
// it stages the tile's input patch plus its halo, (TH+k−1)×(TW+k−1) values, and the channel's k×k
// weights in workgroup memory once, and every invocation computes a RY×RX block of outputs from them,
// each patch row read once into registers and used for all the taps of the block's rows.
//   forward      y[n,c,i,j]  = Σ_{u,v} x[n,c,i−p+u, j−p+v] · w[c,u,v] (+ b[c])
//   input grad   dx = the same kernel over dy with the flipped filter and padding k−1−p
//   weight grad  dw[c,u,v]   = Σ_{n,i,j} dy[n,c,i,j] · x[n,c,i−p+u, j−p+v]: one workgroup per (channel,
//                chunk of the N·tiles) stages dy tiles and x patches, every invocation accumulates all
//                k·k taps over its pixels, a tree reduction in workgroup memory sums the invocations
//                (GROUP taps per round), and a second pass sums the chunks (withPartials).
//
// Variants: one, `depthwise/tiled`; the tile (register block RY×RX ≤ 2×2, up to 16×16 invocations
// per tile, slabs) is fitted to the image and to 16 KiB of workgroup memory by `depthwiseTile`.

import { type Binding, dispatch, gpu, kernel, params } from "./runtime.ts";
import { convKey, type ConvShape } from "./shapes.ts";
import { range, splitReduction, withPartials } from "./conv_common.ts";
import { divU, modU, paramsDecl } from "./wgsl.ts";
import { ANY_BATCH, NOMINAL_BATCH } from "./batch_class.ts";

/** Workgroup memory (floats) and invocations WebGPU guarantees. */
const BUDGET = 16384 / 4, MAX_INVOCATIONS = 256;

/** The tile of one pass: RY×RX outputs per invocation, WY×WX invocations per tile, `slabs` tiles. */
export interface DepthwiseTile {
  ry: number;
  rx: number;
  wy: number;
  wx: number;
  slabs: number;
  /** Weight gradient: taps summed per round of the workgroup reduction. */
  group: number;
}

export type DepthwisePass = "forward" | "input" | "weight";

/** Output extent (rows, columns) and padding of a pass as a stride-1 convolution. */
function passGeometry(s: ConvShape, pass: DepthwisePass) {
  return pass === "input"
    ? { inH: s.oh, inW: s.ow, outH: s.h, outW: s.w, pad: s.k - 1 - s.pad }
    : { inH: s.h, inW: s.w, outH: s.oh, outW: s.ow, pad: s.pad };
}

/**
 * The tile for a pass of this shape: the largest register block and invocation grid (≤ 16×16) that
 * covers the output, then as many slabs as fit 256 invocations, the work (as for the nominal batch, so
 * that the tile does not depend on the batch) and workgroup memory (the weight gradient keeps room for
 * at least 4 taps per reduction round); null when even one 1×1 tile does not fit (a very large k).
 */
export function depthwiseTile(s: ConvShape, pass: DepthwisePass): DepthwiseTile | null {
  const { outH, outW } = passGeometry(s, pass);
  const k = s.k, weight = pass === "weight";
  let ry = Math.min(2, outH), rx = Math.min(2, outW);
  let wy = Math.min(16, Math.ceil(outH / ry)), wx = Math.min(16, Math.ceil(outW / rx));
  for (;;) {
    const th = wy * ry, tw = wx * rx, per = wx * wy;
    const perSlab = (th + k - 1) * (tw + k - 1) + (weight ? th * tw : k * k);
    const minGroup = Math.min(k * k, 4);
    const used = (sl: number) => sl * perSlab + (weight ? sl * per * minGroup : 0);
    const units = (weight ? 1 : s.c) * NOMINAL_BATCH * Math.ceil(outH / th) * Math.ceil(outW / tw);
    let slabs = Math.max(1, Math.min(Math.floor(MAX_INVOCATIONS / per), units));
    while (slabs > 1 && used(slabs) > BUDGET) slabs--;
    if (used(slabs) <= BUDGET) {
      const group = weight ? Math.min(k * k, Math.floor((BUDGET - slabs * perSlab) / (slabs * per))) : 0;
      return { ry, rx, wy, wx, slabs, group };
    }
    if (wx === 1 && wy === 1) {
      if (rx === 1 && ry === 1) return null;
      rx = ry = 1;
    } else if (wx >= wy) wx = Math.ceil(wx / 2);
    else wy = Math.ceil(wy / 2);
  }
}

/** Whether the halo-tiled kernels serve this pass: depthwise, stride 1, and a tile that fits. */
export function depthwiseTiledSupports(s: ConvShape, pass: DepthwisePass): boolean {
  return s.groups === s.c && s.o === s.c && s.stride === 1 && s.pad >= 0 && s.k >= 1 &&
    s.oh === s.h + 2 * s.pad - s.k + 1 && s.ow === s.w + 2 * s.pad - s.k + 1 && s.oh > 0 && s.ow > 0 &&
    depthwiseTile(s, pass) !== null;
}

function tileOf(s: ConvShape, pass: DepthwisePass): DepthwiseTile {
  const t = depthwiseTiledSupports(s, pass) ? depthwiseTile(s, pass) : null;
  if (!t) {
    throw new Error(
      `depthwise/tiled: no ${pass} kernel for ${
        JSON.stringify(s)
      } (needs groups = C = O, stride 1, a tile within 16 KiB)`,
    );
  }
  return t;
}

const tileKey = (t: DepthwiseTile) => `${t.ry},${t.rx},${t.wy},${t.wx},${t.slabs},${t.group}`;

/** A 2-D grid of `count` workgroups (the second dimension only past the per-dimension limit). */
function grid(count: number): [number, number] {
  const max = gpu().limits.maxComputeWorkgroupsPerDimension;
  if (count <= max) return [count, 1];
  const y = Math.ceil(count / max);
  return [Math.ceil(count / y), y];
}

/**
 * WGSL accumulating a block from a patch in workgroup memory: for each patch row `rr` (relative to the
 * invocation's first row) the RX+k−1 values `s0..` are read once, then `emit(r, u)` adds what the
 * block's output row r takes from them through filter row u = rr − r.
 */
function patchRows(t: DepthwiseTile, k: number, pw: number, emit: (r: number, u: number) => string): string {
  return range(t.ry + k - 1).map((rr) => {
    const pairs = range(t.ry).filter((r) => rr - r >= 0 && rr - r < k);
    return `    {
${range(t.rx + k - 1).map((m) => `      let s${m} = Patch[pb + ${rr * pw + m}u];`).join("\n")}
${pairs.map((r) => emit(r, rr - r)).join("\n")}
    }`;
  }).join("\n");
}

interface ConvSpec {
  s: ConvShape;
  pass: "forward" | "input";
  bias: boolean;
}

/** The tile coordinates and plane (image·channel) of work unit `u`. */
const decodeUnit = (u: string, tilesX: number, tilesY: number, plane: string) =>
  `let tX = ${modU(u, tilesX)}; let tY = ${modU(divU(u, tilesX), tilesY)}; let ${plane} = ${
    divU(u, tilesX * tilesY)
  };`;

/**
 * Forward or input gradient: out = conv(inp, w or its flip) (+ b), stride 1, patch plus halo staged.
 * The work units (planes × tiles, planes over the batch) come from `P.total`.
 */
function convSource({ s, pass, bias }: ConvSpec, t: DepthwiseTile): string {
  const { inH, inW, outH, outW, pad } = passGeometry(s, pass);
  const k = s.k, kk = k * k, c = s.c;
  const th = t.wy * t.ry, tw = t.wx * t.rx, ph = th + k - 1, pw = tw + k - 1;
  const tilesY = Math.ceil(outH / th), tilesX = Math.ceil(outW / tw);
  const per = t.wx * t.wy, inv = per * t.slabs;
  const flip = pass === "input";
  const decode = (u: string) => decodeUnit(u, tilesX, tilesY, "plane");
  const R = range(t.ry), J = range(t.rx), U = range(k), V = range(k);
  return `@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
${bias ? "@group(0) @binding(2) var<storage, read> Bias: array<f32>;" : ""}
@group(0) @binding(${bias ? 3 : 2}) var<storage, read_write> Y: array<f32>;
${paramsDecl(bias ? 4 : 3, ["total"])}
var<workgroup> Patch: array<f32, ${t.slabs * ph * pw}>;
var<workgroup> Wt: array<f32, ${t.slabs * kk}>;
@compute @workgroup_size(${inv})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let first = (wid.x + wid.y * nwg.x) * ${t.slabs}u;
  // stage every slab's input patch (zero outside the image) and its channel's filter
  for (var e = lid; e < ${t.slabs * ph * pw}u; e += ${inv}u) {
    let unit = first + ${divU("e", ph * pw)};
    let py = ${divU(modU("e", ph * pw), pw)};
    let px = ${modU("e", pw)};
    var v = 0.0;
    if (unit < P.total) {
      ${decode("unit")}
      let iy = i32(tY * ${th}u + py) - (${pad});
      let ix = i32(tX * ${tw}u + px) - (${pad});
      if (iy >= 0 && iy < ${inH} && ix >= 0 && ix < ${inW}) {
        v = X[plane * ${inH * inW}u + u32(iy) * ${inW}u + u32(ix)];
      }
    }
    Patch[e] = v;
  }
  for (var e = lid; e < ${t.slabs * kk}u; e += ${inv}u) {
    let unit = first + ${divU("e", kk)};
    var v = 0.0;
    if (unit < P.total) {
      let ch = ${modU(divU("unit", tilesX * tilesY), c)};
      v = W[ch * ${kk}u + ${flip ? `${kk - 1}u - ${modU("e", kk)}` : modU("e", kk)}];
    }
    Wt[e] = v;
  }
  workgroupBarrier();
  let sl = ${divU("lid", per)};
  let ty = ${divU(modU("lid", per), t.wx)};
  let tx = ${modU("lid", t.wx)};
  let unit = first + sl;
  if (unit >= P.total) { return; }
  ${decode("unit")}
  let pb = sl * ${ph * pw}u + ty * ${t.ry * pw}u + tx * ${t.rx}u;
  let wb = sl * ${kk}u;
${U.map((u) => V.map((v) => `  let w${u}_${v} = Wt[wb + ${u * k + v}u];`).join("\n")).join("\n")}
${R.map((r) => J.map((j) => `  var a${r}_${j} = 0.0;`).join("\n")).join("\n")}
${
    patchRows(t, k, pw, (r, u) =>
      J.map((j) =>
        `      a${r}_${j} += ${
          V.map((v) => `s${j + v} * w${u}_${v}`).join(" + ")
        };`
      ).join("\n"))
  }
  let oy = tY * ${th}u + ty * ${t.ry}u;
  let ox = tX * ${tw}u + tx * ${t.rx}u;
  let yb = plane * ${outH * outW}u;
${
    R.map((r) =>
      J.map((j) =>
        `  if (oy + ${r}u < ${outH}u && ox + ${j}u < ${outW}u) { Y[yb + (oy + ${r}u) * ${outW}u + ox + ${j}u] = a${r}_${j}${
          bias ? ` + Bias[${modU("plane", c)}]` : ""
        }; }`
      ).join("\n")
    ).join("\n")
  }
}`;
}

function runConv(spec: ConvSpec, bindings: Binding[]): void {
  const t = tileOf(spec.s, spec.pass);
  const { outH, outW } = passGeometry(spec.s, spec.pass);
  const th = t.wy * t.ry, tw = t.wx * t.rx;
  const units = spec.s.n * spec.s.c * Math.ceil(outH / th) * Math.ceil(outW / tw);
  const cls = { ...spec, s: { ...spec.s, n: ANY_BATCH } };
  const key = `dwt_${spec.pass}:${convKey(cls.s)}:${spec.bias ? 1 : 0}:${tileKey(t)}`;
  const pipe = kernel(key, "depthwise/tiled", () => convSource(cls, t));
  dispatch(pipe, [...bindings, params(units)], grid(Math.ceil(units / t.slabs)));
}

/** y = depthwise(x, w) (+ b), stride 1. */
export function depthwiseTiledForward(
  x: Binding,
  w: Binding,
  b: Binding | null,
  y: Binding,
  s: ConvShape,
): void {
  runConv({ s, pass: "forward", bias: !!b }, b ? [x, w, b, y] : [x, w, y]);
}

/** dx of a stride-1 depthwise convolution: the flipped filter over dy with padding k−1−p. */
export function depthwiseTiledBackwardInput(dy: Binding, w: Binding, dx: Binding, s: ConvShape): void {
  runConv({ s, pass: "input", bias: false }, [dy, w, dx]);
}

/** dw of a stride-1 depthwise convolution: partial sums per (channel, chunk), then their sum. */
export function depthwiseTiledBackwardWeight(dy: Binding, x: Binding, dw: Binding, s: ConvShape): void {
  const t = tileOf(s, "weight");
  const { n, c, h, w: W, k, pad, oh: OH, ow: OW } = s;
  const kk = k * k, th = t.wy * t.ry, tw = t.wx * t.rx, ph = th + k - 1, pw = tw + k - 1;
  const tilesY = Math.ceil(OH / th), tilesX = Math.ceil(OW / tw);
  const units = n * tilesY * tilesX, steps = Math.ceil(units / t.slabs);
  const per = t.wx * t.wy, inv = per * t.slabs;
  // the chunks over the images as for the nominal batch; their length, the steps and units from P
  const nominalSteps = Math.ceil((NOMINAL_BATCH * tilesY * tilesX) / t.slabs);
  const chunks = splitReduction(nominalSteps, c * kk, 2).chunks;
  const len = Math.ceil(steps / chunks);
  const p2 = 2 ** Math.ceil(Math.log2(inv));
  const R = range(t.ry), J = range(t.rx), U = range(k), V = range(k);
  const rounds = range(Math.ceil(kk / t.group));
  const tap = (i: number) => `a${Math.floor(i / k)}_${i % k}`;
  const key = `dwt_weight:${convKey({ ...s, n: ANY_BATCH })}:${tileKey(t)}:${chunks}`;
  const source = () =>
    `@group(0) @binding(0) var<storage, read> DY: array<f32>;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Out: array<f32>;
${paramsDecl(3, ["units", "steps", "len"])}
var<workgroup> Patch: array<f32, ${t.slabs * ph * pw}>;
var<workgroup> D: array<f32, ${t.slabs * th * tw}>;
var<workgroup> Red: array<f32, ${inv * t.group}>;
@compute @workgroup_size(${inv})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let ch = wid.x;
  let chunk = wid.y;
  let sl = ${divU("lid", per)};
  let ty = ${divU(modU("lid", per), t.wx)};
  let tx = ${modU("lid", t.wx)};
  let pb = sl * ${ph * pw}u + ty * ${t.ry * pw}u + tx * ${t.rx}u;
  let db = sl * ${th * tw}u + ty * ${t.ry * tw}u + tx * ${t.rx}u;
${U.map((u) => V.map((v) => `  var a${u}_${v} = 0.0;`).join("\n")).join("\n")}
  let stEnd = min((chunk + 1u) * P.len, P.steps);
  for (var st = chunk * P.len; st < stEnd; st++) {
    // stage the step's x patches (zero outside the image) and dy tiles (zero outside the output)
    for (var e = lid; e < ${t.slabs * ph * pw}u; e += ${inv}u) {
      let unit = st * ${t.slabs}u + ${divU("e", ph * pw)};
      let py = ${divU(modU("e", ph * pw), pw)};
      let px = ${modU("e", pw)};
      var v = 0.0;
      if (unit < P.units) {
        ${decodeUnit("unit", tilesX, tilesY, "nn")}
        let iy = i32(tY * ${th}u + py) - (${pad});
        let ix = i32(tX * ${tw}u + px) - (${pad});
        if (iy >= 0 && iy < ${h} && ix >= 0 && ix < ${W}) {
          v = X[(nn * ${c}u + ch) * ${h * W}u + u32(iy) * ${W}u + u32(ix)];
        }
      }
      Patch[e] = v;
    }
    for (var e = lid; e < ${t.slabs * th * tw}u; e += ${inv}u) {
      let unit = st * ${t.slabs}u + ${divU("e", th * tw)};
      let oy = ${divU(modU("e", th * tw), tw)};
      let ox = ${modU("e", tw)};
      var v = 0.0;
      if (unit < P.units) {
        ${decodeUnit("unit", tilesX, tilesY, "nn")}
        let gy = tY * ${th}u + oy;
        let gx = tX * ${tw}u + ox;
        if (gy < ${OH}u && gx < ${OW}u) { v = DY[(nn * ${c}u + ch) * ${OH * OW}u + gy * ${OW}u + gx]; }
      }
      D[e] = v;
    }
    workgroupBarrier();
${R.map((r) => J.map((j) => `    let d${r}_${j} = D[db + ${r * tw + j}u];`).join("\n")).join("\n")}
${
      patchRows(t, k, pw, (r, u) =>
        V.map((v) =>
          `      a${u}_${v} += ${J.map((j) => `d${r}_${j} * s${j + v}`).join(" + ")};`
        ).join("\n"))
    }
    workgroupBarrier();
  }
  // sum the invocations' taps, ${t.group} per round, by a tree in workgroup memory
${
      rounds.map((g) => {
        const taps = range(t.group).map((i) =>
          g * t.group + i
        ).filter((i) => i < kk);
        return `  {
${taps.map((i, q) => `    Red[${q * inv}u + lid] = ${tap(i)};`).join("\n")}
    workgroupBarrier();
    for (var hs = ${p2 >> 1}u; hs > 0u; hs >>= 1u) {
      if (lid < hs && lid + hs < ${inv}u) {
${taps.map((_, q) => `        Red[${q * inv}u + lid] += Red[${q * inv}u + lid + hs];`).join("\n")}
      }
      workgroupBarrier();
    }
    if (lid == 0u) {
${taps.map((i, q) => `      Out[chunk * ${c * kk}u + ch * ${kk}u + ${i}u] = Red[${q * inv}u];`).join("\n")}
    }
    workgroupBarrier();
  }`;
      }).join("\n")
    }
}`;
  const pipe = kernel(key, "depthwise/tiled", source);
  withPartials(
    chunks,
    c * kk,
    dw,
    (dst) => dispatch(pipe, [dy, x, dst, params(units, steps, len)], [c, chunks]),
  );
}
