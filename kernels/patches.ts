// Non-overlapping patches (kernel k ≤ stride s, no padding) gathered into channels:
//   y[n, (c·k + kh)·k + kw, i, j] = x[n, c, i·s + kh, j·s + kw]
// so that a convolution with such windows is a 1×1 convolution (a GEMM) over y. Because windows do
// not overlap, the backward is a gather too: each input position belongs to at most one patch.

import { type Binding, dispatch, FLAT_ARGS, flatIndex, grid1D, kernel, params } from "./runtime.ts";
import { divU, modU, paramsDecl, storageDecls } from "./wgsl.ts";
import { convTuneKey, type ConvVariant, isPatchConv } from "./variant.ts";

export interface PatchShape {
  n: number;
  c: number;
  h: number;
  w: number;
  k: number;
  stride: number;
  oh: number;
  ow: number;
}

/** The sizes a patches kernel compiles in: all but the batch, whose invocations come from `P.total`. */
const shapeKey = (s: PatchShape) => `${s.c},${s.h},${s.w},${s.k},${s.stride},${s.oh},${s.ow}`;

/** x [n, c, h, w] → y [n, c·k·k, oh, ow]. */
export function gatherPatches(x: Binding, y: Binding, s: PatchShape): void {
  const total = s.n * s.c * s.k * s.k * s.oh * s.ow;
  const ckk = s.c * s.k * s.k;
  const pipe = kernel(`patches_gather:${shapeKey(s)}`, "patches/gather", () =>
    `${storageDecls(["x"], ["y"])}
${paramsDecl(2, ["total"])}
@compute @workgroup_size(256)
fn main(${FLAT_ARGS}) {
  let t = ${flatIndex()};
  if (t >= P.total) { return; }
  let j = ${modU("t", s.ow)};
  let i = ${modU(divU("t", s.ow), s.oh)};
  let ch = ${modU(divU("t", s.ow * s.oh), ckk)};
  let nn = ${divU("t", s.ow * s.oh * ckk)};
  let kw = ${modU("ch", s.k)};
  let kh = ${modU(divU("ch", s.k), s.k)};
  let c = ${divU("ch", s.k * s.k)};
  y[t] = x[((nn * ${s.c}u + c) * ${s.h}u + i * ${s.stride}u + kh) * ${s.w}u + j * ${s.stride}u + kw];
}`);
  dispatch(pipe, [x, y, params(total)], grid1D(total));
}

/** The input gradient: gy [n, c·k·k, oh, ow] → gx [n, c, h, w] (zero outside every patch). */
export function scatterPatches(gy: Binding, gx: Binding, s: PatchShape): void {
  const total = s.n * s.c * s.h * s.w;
  const pipe = kernel(
    `patches_scatter:${shapeKey(s)}`,
    "patches/scatter",
    () =>
      `${storageDecls(["gy"], ["gx"])}
${paramsDecl(2, ["total"])}
@compute @workgroup_size(256)
fn main(${FLAT_ARGS}) {
  let t = ${flatIndex()};
  if (t >= P.total) { return; }
  let ww = ${modU("t", s.w)};
  let hh = ${modU(divU("t", s.w), s.h)};
  let nc = ${divU("t", s.w * s.h)};
  let i = ${divU("hh", s.stride)};
  let j = ${divU("ww", s.stride)};
  let kh = ${modU("hh", s.stride)};
  let kw = ${modU("ww", s.stride)};
  var v = 0.0;
  if (kh < ${s.k}u && kw < ${s.k}u && i < ${s.oh}u && j < ${s.ow}u) {
    v = gy[((nc * ${s.k * s.k}u + kh * ${s.k}u + kw) * ${s.oh}u + i) * ${s.ow}u + j];
  }
  gx[t] = v;
}`,
  );
  dispatch(pipe, [gy, gx, params(total)], grid1D(total));
}

/**
 * The patches family: a conv with non-overlapping windows and no padding as a 1×1 conv over gathered
 * patches. A rewrite of the graph (autograd/ops/conv.ts gathers, then plans the 1×1 conv), not a
 * kernel; its backward passes run through the rewritten graph, so only the forward is planned here.
 */
export const PATCH_VARIANTS: ConvVariant[] = [
  {
    name: "patches",
    passes: ["forward"],
    applies: (s, pass) => pass === "forward" && isPatchConv(s),
    rank: () => 0,
    rewrite: true,
    run: () => {
      throw new Error('conv: "patches" rewrites the graph (autograd/ops/conv.ts); it is not a kernel');
    },
    tuneKey: convTuneKey,
  },
];
