// ConvNeXt's layer scale and residual add as one pass each way (fusion "layerscale-residual"):
//   forward   out = x + γ[c]·branch
//   backward  dbranch = γ[c]·g, dγ[c] = Σ_{n,h,w} g·branch (dx = g needs no pass)
// Unfused, these are a mul and an add forward, and two muls and a reduction backward. The backward
// kernel runs one workgroup per (channel, chunk of N·H·W), writes dbranch as it goes and reduces its
// share of dγ with a tree in workgroup memory; with one chunk per channel (every ConvNeXt shape of the
// study) it writes dγ directly, else a second pass adds the chunks (conv_common's withPartials). The
// backward's pipeline serves every batch: the chunks are a grid axis, their length and the elements per
// channel are read from `P`.

import { elementwise } from "./elementwise.ts";
import { withPartials } from "./conv_common.ts";
import { type Binding, dispatch, kernel, params } from "./runtime.ts";
import { divU, paramsDecl, storageDecls } from "./wgsl.ts";

/** [n, c, h·w]: the NCHW tensor as the kernels index it. */
export interface LayerScaleShape {
  n: number;
  c: number;
  p: number;
}

/** Workgroup size of the backward kernel (the tree's width). */
export const WG_LS = 256;
/** Each workgroup sums at least this many elements of a channel before the work is split further. */
const MIN_CHUNK = 4096;
/** Fewest workgroups the backward pass aims for (below that, channels are split into chunks). */
const MIN_GROUPS = 16;

/** out = x + γ[c]·branch: one elementwise pass (γ broadcast as [c, 1, 1]). */
export function layerScaleResidualForward(
  x: Binding,
  gamma: Binding,
  branch: Binding,
  out: Binding,
  s: LayerScaleShape,
): void {
  const shape = [s.n, s.c, s.p];
  elementwise(
    "layerscale_residual",
    "v0 + v1 * v2",
    [
      { binding: x, shape },
      { binding: gamma, shape: [s.c, 1] },
      { binding: branch, shape },
    ],
    out,
    shape,
  );
}

/** Chunks of the N·H·W reduction per channel: one unless the channels alone give too few workgroups. */
export function layerScaleChunks(s: LayerScaleShape): { chunks: number; len: number } {
  const total = s.n * s.p;
  const wanted = Math.ceil(MIN_GROUPS / Math.max(1, s.c));
  const chunks = Math.max(1, Math.min(wanted, Math.floor(total / MIN_CHUNK), 64));
  const len = Math.ceil(total / chunks);
  return { chunks: Math.ceil(total / len), len };
}

/** What the backward WGSL depends on: channels and spatial size (the batch's counts are read from `P`). */
type BackwardSpec = Pick<LayerScaleShape, "c" | "p">;

function backwardKey(b: BackwardSpec): string {
  return `lsr_bwd:${b.c}:${b.p}`;
}

/** The backward's run-time parameters: the N·H·W elements per channel and the chunk length. */
const BACKWARD_PARAMS = ["total", "len"];

function backwardSource(b: BackwardSpec): string {
  return `${storageDecls(["g", "branch", "gamma"], ["dbranch", "dgamma"])}
${paramsDecl(5, BACKWARD_PARAMS)}
var<workgroup> part: array<f32, ${WG_LS}>;
@compute @workgroup_size(${WG_LS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x;
  let chunk = wid.y;
  let gm = gamma[c];
  let r0 = chunk * P.len;
  let r1 = min(r0 + P.len, P.total);
  var acc = 0.0;
  for (var r = r0 + lid; r < r1; r += ${WG_LS}u) {
    let n = ${divU("r", b.p)};
    let i = n * ${b.c * b.p}u + c * ${b.p}u + (r - n * ${b.p}u);
    let gv = g[i];
    dbranch[i] = gm * gv;
    acc += gv * branch[i];
  }
  part[lid] = acc;
  workgroupBarrier();
  for (var w = ${WG_LS / 2}u; w > 0u; w = w / 2u) {
    if (lid < w) { part[lid] += part[lid + w]; }
    workgroupBarrier();
  }
  if (lid == 0u) { dgamma[chunk * ${b.c}u + c] = part[0]; }
}`;
}

/** dbranch = γ[c]·g and dγ[c] = Σ g·branch over n, h, w, in one pass over g (plus a chunk sum if split). */
export function layerScaleResidualBackward(
  g: Binding,
  branch: Binding,
  gamma: Binding,
  dbranch: Binding,
  dgamma: Binding,
  s: LayerScaleShape,
): void {
  if (s.n * s.c * s.p === 0) return;
  const { chunks, len } = layerScaleChunks(s);
  const spec: BackwardSpec = { c: s.c, p: s.p };
  const pipe = kernel(backwardKey(spec), "layerscale_residual_backward", () => backwardSource(spec));
  const prm = params(s.n * s.p, len);
  withPartials(
    chunks,
    s.c,
    dgamma,
    (dst) => dispatch(pipe, [g, branch, gamma, dbranch, dst, prm], [s.c, chunks]),
  );
}
