// Non-overlapping patches (kernel k ≤ stride s, no padding) gathered into channels:
//   y[n, (c·k + kh)·k + kw, i, j] = x[n, c, i·s + kh, j·s + kw]
// so that a convolution with such windows is a 1×1 convolution (a GEMM) over y. Because windows do
// not overlap, the backward is a gather too: each input position belongs to at most one patch.

import { type Binding, dispatch, grid1D, kernel, linearIndex } from "./runtime.ts";
import { storageDecls } from "./wgsl.ts";
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

/** x [n, c, h, w] → y [n, c·k·k, oh, ow]. */
export function gatherPatches(x: Binding, y: Binding, s: PatchShape): void {
  const total = s.n * s.c * s.k * s.k * s.oh * s.ow;
  const grid = grid1D(total);
  const key = `patches_gather:${s.n},${s.c},${s.h},${s.w},${s.k},${s.stride},${s.oh},${s.ow}:${grid}`;
  const pipe = kernel(key, "patches/gather", () =>
    `${storageDecls(["x"], ["y"])}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${linearIndex(grid)};
  if (t >= ${total}u) { return; }
  let j = t % ${s.ow}u;
  let i = (t / ${s.ow}u) % ${s.oh}u;
  let ch = (t / ${s.ow * s.oh}u) % ${s.c * s.k * s.k}u;
  let nn = t / ${s.ow * s.oh * s.c * s.k * s.k};
  let kw = ch % ${s.k}u;
  let kh = (ch / ${s.k}u) % ${s.k}u;
  let c = ch / ${s.k * s.k}u;
  y[t] = x[((nn * ${s.c}u + c) * ${s.h}u + i * ${s.stride}u + kh) * ${s.w}u + j * ${s.stride}u + kw];
}`);
  dispatch(pipe, [x, y], grid);
}

/** The input gradient: gy [n, c·k·k, oh, ow] → gx [n, c, h, w] (zero outside every patch). */
export function scatterPatches(gy: Binding, gx: Binding, s: PatchShape): void {
  const total = s.n * s.c * s.h * s.w;
  const grid = grid1D(total);
  const key = `patches_scatter:${s.n},${s.c},${s.h},${s.w},${s.k},${s.stride},${s.oh},${s.ow}:${grid}`;
  const pipe = kernel(key, "patches/scatter", () =>
    `${storageDecls(["gy"], ["gx"])}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${linearIndex(grid)};
  if (t >= ${total}u) { return; }
  let ww = t % ${s.w}u;
  let hh = (t / ${s.w}u) % ${s.h}u;
  let nc = t / ${s.w * s.h}u;
  let i = hh / ${s.stride}u;
  let j = ww / ${s.stride}u;
  let kh = hh % ${s.stride}u;
  let kw = ww % ${s.stride}u;
  var v = 0.0;
  if (kh < ${s.k}u && kw < ${s.k}u && i < ${s.oh}u && j < ${s.ow}u) {
    v = gy[((nc * ${s.k * s.k}u + kh * ${s.k}u + kw) * ${s.oh}u + i) * ${s.ow}u + j];
  }
  gx[t] = v;
}`);
  dispatch(pipe, [gy, gx], grid);
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
