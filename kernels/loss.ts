// Cross-entropy with a fused log-softmax. Targets are class indices stored as f32.
//
// Forward: one workgroup; each invocation takes rows n (strided), computes m = max_c x and
// ls = log Σ exp(x − m) (stable for any logits), saves both (`lse` holds [N, 2]) and adds
// (m − x[n, t[n]]) + ls, which keeps full precision for logits of ~1e4; a tree sums the rows and
// writes the mean. A target outside [0, C) gives a NaN loss (never a stray read).
// Backward: dx[n, c] = g / N · (exp((x[n, c] − m) − ls) − [c = t[n]]).
// The pipelines serve every batch: the rows N and the bits of 1/N (rounded to f32) are read from `P`.

import { f32Bits } from "./reduce.ts";
import { type Binding, dispatch, FLAT_ARGS, flatIndex, grid1D, kernel, params, WG } from "./runtime.ts";
import { divU, f32, modU, paramsDecl, storageDecls } from "./wgsl.ts";

const WG_CE = 64;

/** The run-time parameters of both kernels: the rows N and 1/N's f32 bits. */
const CE_PARAMS = ["n", "invN"];

/** The parameters for `n` rows. */
const ceParams = (n: number): GPUBuffer => params(n, f32Bits(1 / n));

/** The forward's WGSL for rows of `c` logits. */
export function forwardSource(c: number): string {
  return `${storageDecls(["x", "t"], ["lse", "out"])}
${paramsDecl(4, CE_PARAMS)}
var<workgroup> part: array<f32, ${WG_CE}>;
@compute @workgroup_size(${WG_CE})
fn main(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var row = lid; row < P.n; row += ${WG_CE}u) {
    let b = row * ${c}u;
    var m = x[b];
    for (var k = 1u; k < ${c}u; k++) { m = max(m, x[b + k]); }
    var s = 0.0;
    for (var k = 0u; k < ${c}u; k++) { s += exp(x[b + k] - m); }
    let ls = log(s);
    lse[2u * row] = m;
    lse[2u * row + 1u] = ls;
    let tf = t[row];
    if (tf >= 0.0 && tf < ${f32(c)} && tf == floor(tf)) {
      acc += (m - x[b + u32(tf)]) + ls; // exact difference first: accurate for large logits
    } else {
      acc += bitcast<f32>(0x7fc00000u | (bitcast<u32>(tf) & 0u)); // NaN (a runtime value, not a constant)
    }
  }
  part[lid] = acc;
  workgroupBarrier();
  for (var w = ${WG_CE / 2}u; w > 0u; w = w / 2u) {
    if (lid < w) { part[lid] += part[lid + w]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[0] = part[0] * bitcast<f32>(P.invN); }
}`;
}

export function crossEntropyForward(
  logits: Binding,
  targets: Binding,
  lse: Binding,
  out: Binding,
  n: number,
  c: number,
): void {
  const pipe = kernel(`ce:${c}`, "cross_entropy", () => forwardSource(c));
  dispatch(pipe, [logits, targets, lse, out, ceParams(n)], [1]);
}

/** The backward's WGSL for rows of `c` logits. */
export function backwardSource(c: number): string {
  return `${storageDecls(["g", "x", "t", "lse"], ["dx"])}
${paramsDecl(5, CE_PARAMS)}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let i = ${flatIndex()};
  if (i >= P.n * ${c}u) { return; }
  let row = ${divU("i", c)};
  let k = ${modU("i", c)};
  let p = exp((x[i] - lse[2u * row]) - lse[2u * row + 1u]);
  let hit = select(0.0, 1.0, t[row] == f32(k));
  dx[i] = g[0] * bitcast<f32>(P.invN) * (p - hit);
}`;
}

export function crossEntropyBackward(
  g: Binding,
  logits: Binding,
  targets: Binding,
  lse: Binding,
  dx: Binding,
  n: number,
  c: number,
): void {
  const total = n * c;
  if (total === 0) return;
  dispatch(
    kernel(`ce_backward:${c}`, "cross_entropy_backward", () => backwardSource(c)),
    [g, logits, targets, lse, dx, ceParams(n)],
    grid1D(total),
  );
}
